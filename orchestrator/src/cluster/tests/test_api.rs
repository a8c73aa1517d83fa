//! The NixOS-style test API against the real agent, served over a Unix socket (the agent's
//! test mode), through the same `Node` methods a VM node uses.

use std::path::Path;
use std::time::Duration;

use agent::server::{serve_unix, PowerAction, ServerOptions};

use crate::cluster::*;

struct Fixture {
    node: Node,
    dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let rt = agent_runtime().unwrap();
    let socket = dir.path().join("agent.sock");
    let listen = socket.clone();
    rt.spawn(async move {
        serve_unix(
            &listen,
            ServerOptions {
                power: PowerAction::Exit,
            },
        )
        .await
    });
    let client = rt.block_on(async {
        for _ in 0..1000 {
            if let Ok(c) = agent::Client::connect_unix(&socket).await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("agent never listened on {}", socket.display());
    });
    let paths = NodePaths::in_dir(dir.path());
    let launch = NodeLaunch {
        name: "probe".into(),
        index: 0,
        kernel: "/nonexistent".into(),
        initrd: None,
        cmdline: String::new(),
        memory_mib: 64,
        cpus: 1,
        disks: vec![],
        nics: vec![],
    };
    let node = Node::new(launch, paths, "/nonexistent/vmm", vec![], vec![], rt);
    *node.agent.lock().unwrap() = Some(client);
    Fixture { node, dir }
}

const SHORT: Duration = Duration::from_millis(300);

#[test]
fn succeed_returns_stdout_and_failure_shows_everything() {
    let f = fixture();
    assert_eq!(f.node.succeed("echo hello").unwrap(), "hello\n");
    let err = f
        .node
        .succeed("echo out; echo err >&2; exit 3")
        .unwrap_err()
        .to_string();
    for needle in ["node probe", "exit code 3", "out", "err", "echo out"] {
        assert!(err.contains(needle), "{needle:?} missing in: {err}");
    }
}

#[test]
fn fail_and_execute() {
    let f = fixture();
    assert_eq!(f.node.fail("echo no; exit 1").unwrap(), "no\n");
    let err = f.node.fail("true").unwrap_err().to_string();
    assert!(err.contains("expected to fail"), "{err}");
    assert_eq!(
        f.node.execute("printf x; exit 42").unwrap(),
        (42, "x".to_string())
    );
    assert_eq!(f.node.execute("kill -9 $$").unwrap().0, 137);
}

#[test]
fn wait_until_succeeds_retries_until_the_command_passes() {
    let f = fixture();
    let counter = f.dir.path().join("count");
    let cmd = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); echo $((n+1)) > {c}; echo try$n; [ $n -ge 2 ]",
        c = counter.display()
    );
    let out = f
        .node
        .wait_until_succeeds(&cmd, Duration::from_secs(60))
        .unwrap();
    assert_eq!(out, "try2\n");
    assert_eq!(std::fs::read_to_string(&counter).unwrap(), "3\n");
}

#[test]
fn waits_time_out_naming_node_and_what_was_awaited() {
    let f = fixture();
    let err = f
        .node
        .wait_until_succeeds("echo nope >&2; false", SHORT)
        .unwrap_err()
        .to_string();
    assert!(err.contains("node probe: timed out"), "{err}");
    assert!(err.contains("`echo nope >&2; false` to succeed"), "{err}");
    assert!(err.contains("exit code 1") && err.contains("nope"), "{err}");
    let err = f
        .node
        .wait_until_fails("true", SHORT)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`true` to fail"), "{err}");
    assert_eq!(
        f.node.wait_until_fails("echo gone; exit 2", SHORT).unwrap(),
        "gone\n"
    );
    let missing = f.dir.path().join("missing");
    let err = f
        .node
        .wait_for_file(missing.to_str().unwrap(), SHORT)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("file {} to exist", missing.display())),
        "{err}"
    );
}

#[test]
fn a_command_that_hangs_ends_its_wait_on_time() {
    let f = fixture();
    let t = std::time::Instant::now();
    let err = f
        .node
        .wait_until_fails("sleep 600", Duration::from_secs(1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`sleep 600` to fail"), "{err}");
    assert!(
        err.contains("killed"),
        "a killed command is not a failed one: {err}"
    );
    // One attempt gets at least 10 s, never the whole command time limit (15 min).
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
}

#[test]
fn wait_for_file_and_port_see_what_exists() {
    let f = fixture();
    f.node
        .wait_for_file(f.dir.path().to_str().unwrap(), SHORT)
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    f.node
        .wait_for_open_port(port, Duration::from_secs(10))
        .unwrap();
    drop(listener);
    let err = f
        .node
        .wait_for_open_port(port, SHORT)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("TCP port {port} to listen")), "{err}");
}

#[test]
fn copy_to_and_from_keep_content_and_mode() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture();
    let local = f.dir.path().join("tool");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&local, &data).unwrap();
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o750)).unwrap();
    let remote = f.dir.path().join("guest-copy");
    let remote = remote.to_str().unwrap();
    assert_eq!(f.node.copy_to(&local, remote).unwrap(), data.len() as u64);
    let mode = std::fs::metadata(remote).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o750);
    let back = f.dir.path().join("back");
    assert_eq!(f.node.copy_from(remote, &back).unwrap(), data.len() as u64);
    assert_eq!(std::fs::read(&back).unwrap(), data);
    let err = f
        .node
        .copy_from("/nonexistent/file", Path::new(&back))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("node probe: agent") && err.contains("/nonexistent/file"),
        "{err}"
    );
}

#[test]
fn console_text_matching_consumes_lines() {
    use std::io::Write;
    let f = fixture();
    let log = &f.node.paths().serial_log;
    let append = |s: &str| {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        file.write_all(s.as_bytes()).unwrap();
    };
    append("booting\nkiln-init: ready (eth0 up)\nshell$ ");
    assert_eq!(
        f.node
            .wait_for_console_text(r"ready \(eth\d", SHORT)
            .unwrap(),
        "kiln-init: ready (eth0 up)"
    );
    let err = f
        .node
        .wait_for_console_text("ready", SHORT)
        .unwrap_err()
        .to_string();
    assert!(err.contains("console text /ready/"), "{err}");
    append("\nsecond ready\n");
    assert_eq!(
        f.node.wait_for_console_text("ready", SHORT).unwrap(),
        "second ready"
    );
    let err = f
        .node
        .wait_for_console_text("(", SHORT)
        .unwrap_err()
        .to_string();
    assert!(err.contains("console pattern"), "{err}");
}
