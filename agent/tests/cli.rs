//! The host CLI (`agent exec|put|get`) against a real agent.

mod common;

use std::process::{Command, Output};

use common::{pattern, Agent};

fn agent_cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(args)
        .output()
        .expect("run agent cli")
}

#[test]
fn exec_prints_both_streams_and_exits_with_the_remote_code() {
    let agent = Agent::start(&[]);
    let sock = agent.socket.to_str().unwrap();
    let out = agent_cli(&[
        "exec",
        "--unix",
        sock,
        "--env",
        "WHO=kiln",
        "--",
        "sh",
        "-c",
        "echo out-$WHO; echo err-$WHO >&2; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(out.stdout, b"out-kiln\n");
    assert_eq!(out.stderr, b"err-kiln\n");

    let out = agent_cli(&[
        "exec", "--unix", sock, "--shell", "--", "echo", "a", "&&", "echo", "b",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"a\nb\n");

    let out = agent_cli(&[
        "exec",
        "--unix",
        sock,
        "--timeout",
        "0.2",
        "--",
        "sleep",
        "30",
    ]);
    assert_eq!(out.status.code(), Some(128 + 9));
    assert!(String::from_utf8_lossy(&out.stderr).contains("timeout"));
}

#[test]
fn exec_forwards_stdin() {
    use std::io::Write;
    let agent = Agent::start(&[]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_agent"))
        .args([
            "exec",
            "--unix",
            agent.socket.to_str().unwrap(),
            "--stdin",
            "--",
            "sha256sum",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let data = pattern(1 << 20, 5);
    child.stdin.take().unwrap().write_all(&data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let local = Command::new("sha256sum")
        .stdin(
            std::fs::File::open({
                let p = agent.path("in");
                std::fs::write(&p, &data).unwrap();
                p
            })
            .unwrap(),
        )
        .output()
        .unwrap();
    assert_eq!(out.stdout, local.stdout);
}

#[test]
fn put_and_get_copy_files() {
    let agent = Agent::start(&[]);
    let sock = agent.socket.to_str().unwrap();
    let src = agent.path("src.bin");
    let data = pattern(5 * 1024 * 1024 + 3, 9);
    std::fs::write(&src, &data).unwrap();
    let remote = agent.path("remote.bin");
    let out = agent_cli(&[
        "put",
        "--unix",
        sock,
        "--mode",
        "600",
        src.to_str().unwrap(),
        remote.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = agent.path("back.bin");
    let out = agent_cli(&[
        "get",
        "--unix",
        sock,
        remote.to_str().unwrap(),
        back.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&back).unwrap(), data);
}

#[test]
fn bad_usage_gets_one_clear_error() {
    let agent = Agent::start(&[]);
    let sock = agent.socket.to_str().unwrap();
    // No target at all: a usage error from the argument parser.
    let out = agent_cli(&["exec", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    let out = agent_cli(&["exec", "--unix", sock, "--env", "NOEQUALS", "--", "true"]);
    assert_eq!(out.status.code(), Some(255));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("KEY=VALUE"), "{err}");
    let out = agent_cli(&["exec", "--unix", "/nonexistent/agent.sock", "--", "true"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/agent.sock"));
    let out = agent_cli(&["get", "--unix", sock, "/nonexistent/file", "/tmp/x"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));
}
