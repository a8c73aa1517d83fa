//! Exec over the real agent binary on a Unix socket.

mod common;

use std::time::Duration;

use agent::client::{ClientError, ExecEvent};
use agent::protocol::ErrorKind;
use agent::{ExecRequest, ExitStatus};
use common::{pattern, wait_dead, Agent};

#[tokio::test]
async fn exit_codes_and_signals() {
    let agent = Agent::start(&[]);
    let client = agent.client().await;
    for code in [0, 1, 42, 255] {
        let out = client
            .exec_buffered(ExecRequest::shell(format!("exit {code}")))
            .await
            .unwrap();
        assert_eq!(out.status, ExitStatus::Code(code));
        assert!(!out.timed_out);
    }
    let out = client
        .exec_buffered(ExecRequest::shell("kill -TERM $$"))
        .await
        .unwrap();
    assert_eq!(out.status, ExitStatus::Signal(libc::SIGTERM));
    assert_eq!(out.status.shell_code(), 128 + libc::SIGTERM);
}

#[tokio::test]
async fn stdout_and_stderr_are_separate() {
    let agent = Agent::start(&[]);
    let client = agent.client().await;
    let out = client
        .exec_buffered(ExecRequest::shell(
            "for i in 1 2 3; do echo out$i; echo err$i >&2; done",
        ))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"out1\nout2\nout3\n");
    assert_eq!(out.stderr, b"err1\nerr2\nerr3\n");
}

#[tokio::test]
async fn argv_is_not_shell_interpreted() {
    let agent = Agent::start(&[]);
    let client = agent.client().await;
    let out = client
        .exec_buffered(ExecRequest::argv(["echo", "$HOME", "a;b", "*"]))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"$HOME a;b *\n");
}

#[tokio::test]
async fn env_cwd_and_clear_env() {
    let agent = Agent::start(&[]);
    let client = agent.client().await;
    let dir = agent.dir.path().to_str().unwrap().to_string();
    let out = client
        .exec_buffered(
            ExecRequest::shell("echo \"$KILN_A|$KILN_B\"; pwd")
                .env("KILN_A", "alpha")
                .env("KILN_B", "with space")
                .cwd(&dir),
        )
        .await
        .unwrap();
    let real_dir = std::fs::canonicalize(&dir).unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("alpha|with space\n{}\n", real_dir.display())
    );

    let out = client
        .exec_buffered(
            ExecRequest::argv(["/usr/bin/env"])
                .clear_env()
                .env("ONLY", "1"),
        )
        .await
        .unwrap();
    assert_eq!(out.stdout, b"ONLY=1\n");

    let err = client
        .exec_buffered(ExecRequest::argv(["true"]).cwd("/nonexistent/dir"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Remote {
                kind: ErrorKind::NotFound,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn missing_program_and_empty_argv_are_errors() {
    let agent = Agent::start(&[]);
    let client = agent.client().await;
    let err = client
        .exec_buffered(ExecRequest::argv(["/no/such/program"]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Remote {
                kind: ErrorKind::NotFound,
                ..
            }
        ),
        "{err}"
    );
    let err = client
        .exec_buffered(ExecRequest::argv(Vec::<String>::new()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Remote {
                kind: ErrorKind::InvalidRequest,
                ..
            }
        ),
        "{err}"
    );
    // The connection still works afterwards.
    assert!(client
        .exec_buffered(ExecRequest::argv(["true"]))
        .await
        .unwrap()
        .status
        .success());
}

#[tokio::test]
async fn large_output_100_mib_is_hash_checked() {
    const SIZE: usize = 100 * 1024 * 1024;
    let agent = Agent::start(&[]);
    let data = pattern(SIZE, 7);
    let expected = blake3::hash(&data);
    let file = agent.path("big.bin");
    std::fs::write(&file, &data).unwrap();
    drop(data);

    let client = agent.client().await;
    let mut exec = client
        .exec(ExecRequest::argv(["cat", file.to_str().unwrap()]))
        .await
        .unwrap();
    let mut hasher = blake3::Hasher::new();
    let mut total = 0usize;
    let mut stderr = Vec::new();
    let status = loop {
        match exec.next_event().await.unwrap().expect("event") {
            ExecEvent::Stdout(d) => {
                total += d.len();
                hasher.update(&d);
            }
            ExecEvent::Stderr(d) => stderr.extend(d),
            ExecEvent::Exited { status, .. } => break status,
        }
    };
    assert_eq!(status, ExitStatus::Code(0));
    assert!(stderr.is_empty());
    assert_eq!(total, SIZE);
    assert_eq!(hasher.finalize(), expected);
}

#[tokio::test]
async fn stdin_is_streamed() {
    let agent = Agent::start(&[]);
    let client = agent.client().await;
    // `head -n 1` answers the first line before stdin is closed: proves streaming.
    let mut exec = client
        .exec(ExecRequest::shell("head -n 1; echo second-phase; wc -c").with_stdin())
        .await
        .unwrap();
    let mut stdin = exec.take_stdin().unwrap();
    stdin.write(b"first line\n").await.unwrap();
    let mut seen = Vec::new();
    while !seen.ends_with(b"second-phase\n") {
        match exec.next_event().await.unwrap().unwrap() {
            ExecEvent::Stdout(d) => seen.extend(d),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, b"first line\nsecond-phase\n");
    // Then a large body, counted by `wc -c`, then EOF.
    let body = pattern(3 * 1024 * 1024 + 17, 3);
    stdin.write(&body).await.unwrap();
    stdin.close().await.unwrap();
    let out = exec.wait_output().await.unwrap();
    assert_eq!(out.status, ExitStatus::Code(0));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        body.len().to_string()
    );
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let agent = Agent::start(&[]);
    let client = agent.client().await;
    let pidfile = agent.path("grandchild.pid");
    let script = format!(
        "sleep 1000 & echo $! > {p}.tmp; mv {p}.tmp {p}; wait",
        p = pidfile.display()
    );
    let out = client
        .exec_buffered(ExecRequest::shell(script).timeout(Duration::from_secs(2)))
        .await
        .unwrap();
    assert!(out.timed_out);
    assert_eq!(out.status, ExitStatus::Signal(libc::SIGKILL));
    let grandchild: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_dead(grandchild).await,
        "grandchild {grandchild} survived the timeout"
    );
}

#[tokio::test]
async fn kill_request_stops_a_running_command() {
    let agent = Agent::start(&[]);
    let client = agent.client().await;
    let exec = client
        .exec(ExecRequest::argv(["sleep", "1000"]))
        .await
        .unwrap();
    let pid = exec.pid();
    exec.kill().await.unwrap();
    let out = exec.wait_output().await.unwrap();
    assert_eq!(out.status, ExitStatus::Signal(libc::SIGKILL));
    assert!(!out.timed_out);
    assert!(wait_dead(pid).await);
}

#[tokio::test]
async fn fifty_concurrent_execs_on_one_connection() {
    let agent = Agent::start(&[]);
    let client = agent.client().await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            // Each one sleeps a little so that they really overlap.
            let req =
                ExecRequest::shell("sleep 0.2; echo out-$N; echo err-$N >&2; exit $(( $N % 7 ))")
                    .env("N", i.to_string());
            (i, client.exec_buffered(req).await.unwrap())
        }));
    }
    for task in tasks {
        let (i, out) = task.await.unwrap();
        assert_eq!(out.stdout, format!("out-{i}\n").into_bytes());
        assert_eq!(out.stderr, format!("err-{i}\n").into_bytes());
        assert_eq!(out.status, ExitStatus::Code(i % 7));
    }
}

#[tokio::test]
async fn orphans_are_reaped_in_subreaper_mode() {
    let agent = Agent::start(&["--subreaper"]);
    let client = agent.client().await;
    // The background child outlives its parent shell and is re-parented to the agent;
    // its output goes elsewhere so the exec finishes right away.
    let out = client
        .exec_buffered(ExecRequest::shell(
            "sleep 1 >/dev/null 2>&1 </dev/null & echo $!",
        ))
        .await
        .unwrap();
    let orphan: u32 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Its shell has exited: the orphan now belongs to the agent, which alone can reap it.
    let stat = std::fs::read_to_string(format!("/proc/{orphan}/stat")).unwrap();
    let ppid = agent::pid1::reaper::parse_stat(&stat).unwrap().1;
    assert_eq!(ppid as u32, agent.child.id());
    assert!(
        common::wait_gone(orphan).await,
        "orphan {orphan} was not reaped"
    );
}

#[tokio::test]
async fn timeout_returns_even_if_an_escaped_process_holds_the_output() {
    let agent = Agent::start(&[]);
    let client = agent.client().await;
    let pidfile = agent.path("escaped.pid");
    // `setsid` leaves the process group, so the group kill cannot reach it; it keeps
    // stdout open. The agent must still answer after its grace period.
    let script = format!(
        "setsid sleep 1000 & echo $! > {p}.tmp; mv {p}.tmp {p}; wait",
        p = pidfile.display()
    );
    let out = client
        .exec_buffered(ExecRequest::shell(script).timeout(Duration::from_secs(2)))
        .await
        .unwrap();
    assert!(out.timed_out);
    let escaped: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Clean up the process this test deliberately let escape.
    unsafe { libc::kill(escaped, libc::SIGKILL) };
}

#[tokio::test]
async fn buffered_output_is_capped_and_the_command_killed() {
    let agent = Agent::start(&[]);
    let client = agent.client().await;
    let exec = client.exec(ExecRequest::argv(["yes"])).await.unwrap();
    let pid = exec.pid();
    let err = exec.wait_output_limited(1 << 20).await.unwrap_err();
    assert!(
        matches!(err, ClientError::OutputTooLarge { limit } if limit == 1 << 20),
        "{err}"
    );
    assert!(wait_dead(pid).await, "yes kept running after the cap");
    // The connection is still fine.
    assert!(client
        .exec_buffered(ExecRequest::argv(["true"]))
        .await
        .unwrap()
        .status
        .success());
}
