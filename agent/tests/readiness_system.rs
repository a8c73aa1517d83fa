//! Readiness probes, system requests and the vsock-UDS transport, against the real binary.

mod common;

use std::os::unix::fs::PermissionsExt;

use agent::client::ClientError;
use agent::protocol::ErrorKind;
use agent::{Client, ExecRequest};
use common::Agent;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

#[tokio::test]
async fn port_probe_sees_listeners_v4_and_v6() {
    let agent = Agent::start(&[]);
    let client = agent.client().await;
    let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port4 = v4.local_addr().unwrap().port();
    assert!(client.is_port_open(port4).await.unwrap());
    drop(v4);
    // A process forked by a parallel test may hold a copy of the socket until its exec,
    // so the listener can outlive `drop` for a moment: wait for it to disappear.
    let closed = common::wait_until_async(|| {
        let client = client.clone();
        async move { !client.is_port_open(port4).await.unwrap() }
    })
    .await;
    assert!(
        closed,
        "port {port4} still reported open after its listener closed"
    );
    if let Ok(v6) = std::net::TcpListener::bind("[::1]:0") {
        let port6 = v6.local_addr().unwrap().port();
        assert!(client.is_port_open(port6).await.unwrap());
    }
}

#[tokio::test]
async fn file_exists_probe() {
    let agent = Agent::start(&[]);
    let client = agent.client().await;
    let f = agent.path("marker");
    assert!(!client.file_exists(f.to_str().unwrap()).await.unwrap());
    std::fs::write(&f, b"").unwrap();
    assert!(client.file_exists(f.to_str().unwrap()).await.unwrap());
}

/// A stand-in `systemctl` early in the agent's PATH: the agent must run it directly
/// with `is-active -- UNIT` and report its verdict.
#[tokio::test]
async fn unit_probe_runs_systemctl_is_active() {
    let bin = tempfile::tempdir().unwrap();
    let fake = bin.path().join("systemctl");
    std::fs::write(
        &fake,
        "#!/bin/sh\n[ \"$1 $2\" = 'is-active --' ] || exit 99\n\
         case \"$3\" in up.service) echo active; exit 0;; \
         starting.service) echo activating; exit 3;; *) echo inactive; exit 3;; esac\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    let agent = Agent::start_with_env(&[], &[("PATH", &path)]);
    let client = agent.client().await;
    assert!(client.is_unit_active("up.service").await.unwrap());
    let state = client.unit_state("starting.service").await.unwrap();
    assert!(!state.active);
    assert_eq!(state.state, "activating");
    assert!(!client.is_unit_active("down.service").await.unwrap());
}

#[tokio::test]
async fn unit_probe_without_systemctl_is_a_clear_error() {
    let empty = tempfile::tempdir().unwrap();
    let agent = Agent::start_with_env(&[], &[("PATH", empty.path().to_str().unwrap())]);
    let client = agent.client().await;
    let err = client.is_unit_active("x.service").await.unwrap_err();
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
async fn hostname_uptime_sync() {
    let agent = Agent::start(&[]);
    let client = agent.client().await;
    let expected = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(client.hostname().await.unwrap(), expected.trim());
    assert_eq!(client.server_info().hostname, expected.trim());
    assert_eq!(
        client.server_info().version,
        agent::protocol::PROTOCOL_VERSION
    );

    let proc_uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let up = client.uptime().await.unwrap();
    // CLOCK_BOOTTIME and /proc/uptime count the same thing; allow for the time between.
    assert!(
        up.as_secs_f64() + 1.0 >= proc_uptime,
        "{up:?} vs {proc_uptime}"
    );
    assert!(
        up.as_secs_f64() <= proc_uptime + 60.0,
        "{up:?} vs {proc_uptime}"
    );
    client.sync().await.unwrap();
}

#[tokio::test]
async fn poweroff_in_test_mode_exits_the_agent_after_answering() {
    let mut agent = Agent::start(&[]);
    let client = agent.client().await;
    client.poweroff().await.unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let st = agent.child.wait().unwrap();
        (st, agent)
    })
    .await
    .unwrap()
    .0;
    assert!(status.success(), "{status:?}");
}

/// A minimal Firecracker-style vsock muxer: reads `CONNECT <port>\n`, answers
/// `OK <port>\n` for `port` and hangs up otherwise, then splices to the agent socket.
async fn fake_vsock_muxer(
    dir: &std::path::Path,
    agent_socket: std::path::PathBuf,
    port: u32,
) -> std::path::PathBuf {
    let uds = dir.join("vm.vsock");
    let listener = UnixListener::bind(&uds).unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let agent_socket = agent_socket.clone();
            tokio::spawn(async move {
                let mut host = BufReader::new(stream);
                let mut line = String::new();
                host.read_line(&mut line).await.unwrap();
                if line != format!("CONNECT {port}\n") {
                    return; // Firecracker closes the connection on a bad port.
                }
                let mut host = host.into_inner();
                host.write_all(format!("OK {port}\n").as_bytes())
                    .await
                    .unwrap();
                let mut guest = UnixStream::connect(&agent_socket).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut host, &mut guest).await;
            });
        }
    });
    uds
}

#[tokio::test]
async fn client_connects_through_a_vsock_uds() {
    let agent = Agent::start(&[]);
    let mux_dir = tempfile::tempdir().unwrap();
    let uds = fake_vsock_muxer(mux_dir.path(), agent.socket.clone(), 10_700).await;
    let client = Client::connect_vsock_uds(&uds, 10_700).await.unwrap();
    let out = client
        .exec_buffered(ExecRequest::argv(["echo", "via-vsock"]))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"via-vsock\n");

    let err = match Client::connect_vsock_uds(&uds, 9).await {
        Ok(_) => panic!("connected to a port nobody listens on"),
        Err(e) => e,
    };
    assert!(
        matches!(err, ClientError::VsockConnect { port: 9, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn cli_exec_through_a_vsock_uds_with_port() {
    let agent = Agent::start(&[]);
    let mux_dir = tempfile::tempdir().unwrap();
    let uds = fake_vsock_muxer(mux_dir.path(), agent.socket.clone(), 5005).await;
    let target = format!("{}:5005", uds.display());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent"))
        .args([
            "exec",
            "--vsock-uds",
            &target,
            "--",
            "sh",
            "-c",
            "echo hi; exit 4",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(out.stdout, b"hi\n");
    // Without a port the documented default (10700) is used, which this muxer refuses.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["exec", "--vsock-uds", uds.to_str().unwrap(), "--", "true"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&out.stderr).contains("port 10700"));
}

/// The host side of the start-up announcement, fed the exact frame the guest sends
/// (the guest's vsock connect itself needs a VM).
#[tokio::test]
async fn announcement_is_received_on_the_uds_port_socket() {
    use agent::client::{accept_announcement, announce_socket_path};
    use agent::codec::FrameCodec;
    use agent::protocol::{ClientFrame, ServerFrame};
    use futures_util::SinkExt;

    let dir = tempfile::tempdir().unwrap();
    let path = announce_socket_path(dir.path().join("vm.vsock"), 10_701);
    assert_eq!(path, dir.path().join("vm.vsock_10701"));
    let listener = UnixListener::bind(&path).unwrap();
    let guest = tokio::spawn(async move {
        let stream = UnixStream::connect(&path).await.unwrap();
        let mut sink = tokio_util::codec::FramedWrite::new(
            stream,
            FrameCodec::<ClientFrame, ServerFrame>::new(),
        );
        sink.send(agent::server::announcement()).await.unwrap();
    });
    let info = accept_announcement(&listener).await.unwrap();
    guest.await.unwrap();
    assert_eq!(info.version, agent::protocol::PROTOCOL_VERSION);
    assert_eq!(info.agent_version, env!("CARGO_PKG_VERSION"));
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(info.hostname, hostname.trim());
}
