//! Hostile input: malformed, oversized, truncated frames, unknown messages, bad
//! handshakes and clients that vanish mid-stream. The agent must drop that connection
//! and keep serving others.

mod common;

use agent::client::ExecEvent;
use agent::codec::encode_body;
use agent::protocol::{
    ClientFrame, ClientMsg, ErrorKind, ServerFrame, ServerMsg, MAX_FRAME_LEN, PROTOCOL_VERSION,
};
use agent::{ExecRequest, ExitStatus};
use common::{wait_dead, Agent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

async fn send(stream: &mut UnixStream, frame: &ClientFrame) {
    let body = encode_body(frame).unwrap();
    stream
        .write_all(&(body.len() as u32).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&body).await.unwrap();
}

/// Next frame, or None once the agent closed the connection.
async fn recv(stream: &mut UnixStream) -> Option<ServerFrame> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).await.ok()?;
    Some(agent::codec::decode_body(&body).unwrap())
}

async fn handshaken(agent: &Agent) -> UnixStream {
    let mut s = UnixStream::connect(&agent.socket).await.unwrap();
    send(
        &mut s,
        &ClientFrame {
            id: 0,
            msg: ClientMsg::Hello {
                version: PROTOCOL_VERSION,
            },
        },
    )
    .await;
    assert!(matches!(
        recv(&mut s).await.unwrap().msg,
        ServerMsg::Hello { .. }
    ));
    s
}

/// Sends raw bytes on a fresh (handshaken or not) connection and checks that the agent
/// closes it without answering.
async fn closes_after(mut s: UnixStream, bytes: &[u8], half_close: bool) {
    s.write_all(bytes).await.unwrap();
    if half_close {
        s.shutdown().await.unwrap();
    }
    assert!(recv(&mut s).await.is_none(), "agent answered bad input");
}

async fn still_serves(agent: &mut Agent) {
    assert!(agent.child.try_wait().unwrap().is_none(), "agent died");
    let client = agent.client().await;
    let out = client
        .exec_buffered(ExecRequest::argv(["echo", "alive"]))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"alive\n");
}

#[tokio::test]
async fn garbage_oversized_truncated_and_unknown_frames() {
    let mut agent = Agent::start(&[]);
    // A long-lived good connection that must survive its neighbours' bad input.
    let survivor = agent.client().await;

    // Text garbage: its first 4 bytes read as a huge length.
    let s = UnixStream::connect(&agent.socket).await.unwrap();
    closes_after(s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false).await;
    still_serves(&mut agent).await;

    // A length just over the maximum, after a valid handshake.
    let s = handshaken(&agent).await;
    closes_after(s, &((MAX_FRAME_LEN as u32) + 1).to_be_bytes(), false).await;
    still_serves(&mut agent).await;

    // A frame announcing 100 bytes, 10 sent, then the client hangs up its side.
    let s = handshaken(&agent).await;
    let mut truncated = 100u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&[1; 10]);
    closes_after(s, &truncated, true).await;
    still_serves(&mut agent).await;

    // Well-framed but an unknown message type (variant 200).
    let s = handshaken(&agent).await;
    closes_after(s, &[0, 0, 0, 3, 0x01, 0xC8, 0x01], false).await;
    still_serves(&mut agent).await;

    // Well-framed random bytes.
    let s = handshaken(&agent).await;
    closes_after(s, &[0, 0, 0, 6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], false).await;
    still_serves(&mut agent).await;

    // A valid message followed by trailing bytes inside the same frame.
    let s = handshaken(&agent).await;
    let mut body = encode_body(&ClientFrame {
        id: 5,
        msg: ClientMsg::Hostname,
    })
    .unwrap()
    .to_vec();
    body.extend_from_slice(b"junk");
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend(body);
    closes_after(s, &frame, false).await;
    still_serves(&mut agent).await;

    assert!(
        survivor.uptime().await.is_ok(),
        "neighbour connection was affected"
    );
}

#[tokio::test]
async fn handshake_is_enforced() {
    let mut agent = Agent::start(&[]);
    // Wrong version: one error answer, then closed.
    let mut s = UnixStream::connect(&agent.socket).await.unwrap();
    send(
        &mut s,
        &ClientFrame {
            id: 0,
            msg: ClientMsg::Hello { version: 999 },
        },
    )
    .await;
    let answer = recv(&mut s).await.unwrap();
    assert!(
        matches!(
            answer.msg,
            ServerMsg::Error {
                kind: ErrorKind::UnsupportedVersion,
                ..
            }
        ),
        "{answer:?}"
    );
    assert!(recv(&mut s).await.is_none());

    // A request before Hello: closed without an answer.
    let mut s = UnixStream::connect(&agent.socket).await.unwrap();
    send(
        &mut s,
        &ClientFrame {
            id: 1,
            msg: ClientMsg::Hostname,
        },
    )
    .await;
    assert!(recv(&mut s).await.is_none());
    still_serves(&mut agent).await;
}

#[tokio::test]
async fn protocol_misuse_gets_errors_not_crashes() {
    let mut agent = Agent::start(&[]);
    let mut s = handshaken(&agent).await;
    // Reserved id 0 for a request.
    send(
        &mut s,
        &ClientFrame {
            id: 0,
            msg: ClientMsg::Hostname,
        },
    )
    .await;
    let a = recv(&mut s).await.unwrap();
    assert!(
        matches!(
            a.msg,
            ServerMsg::Error {
                kind: ErrorKind::InvalidRequest,
                ..
            }
        ),
        "{a:?}"
    );
    // Follow-ups for requests that do not exist are ignored; the next request is answered.
    send(
        &mut s,
        &ClientFrame {
            id: 77,
            msg: ClientMsg::Stdin(b"x".to_vec()),
        },
    )
    .await;
    send(
        &mut s,
        &ClientFrame {
            id: 78,
            msg: ClientMsg::PutEnd { hash: [0; 32] },
        },
    )
    .await;
    send(
        &mut s,
        &ClientFrame {
            id: 3,
            msg: ClientMsg::Hello { version: 1 },
        },
    )
    .await;
    let a = recv(&mut s).await.unwrap();
    assert_eq!(a.id, 3);
    assert!(
        matches!(
            a.msg,
            ServerMsg::Error {
                kind: ErrorKind::InvalidRequest,
                ..
            }
        ),
        "{a:?}"
    );
    send(
        &mut s,
        &ClientFrame {
            id: 4,
            msg: ClientMsg::Uptime,
        },
    )
    .await;
    let a = recv(&mut s).await.unwrap();
    assert_eq!(a.id, 4);
    assert!(matches!(a.msg, ServerMsg::Uptime(_)));
    still_serves(&mut agent).await;
}

#[tokio::test]
async fn put_with_wrong_hash_is_rejected_and_leaves_nothing() {
    let agent = Agent::start(&[]);
    let mut s = handshaken(&agent).await;
    let target = agent.path("tampered");
    let path = target.to_str().unwrap().to_string();
    send(
        &mut s,
        &ClientFrame {
            id: 1,
            msg: ClientMsg::PutBegin { path, mode: 0o644 },
        },
    )
    .await;
    send(
        &mut s,
        &ClientFrame {
            id: 1,
            msg: ClientMsg::PutData(b"payload".to_vec()),
        },
    )
    .await;
    let wrong = *blake3::hash(b"something else").as_bytes();
    send(
        &mut s,
        &ClientFrame {
            id: 1,
            msg: ClientMsg::PutEnd { hash: wrong },
        },
    )
    .await;
    let a = recv(&mut s).await.unwrap();
    assert!(
        matches!(
            a.msg,
            ServerMsg::Error {
                kind: ErrorKind::HashMismatch,
                ..
            }
        ),
        "{a:?}"
    );
    assert!(!target.exists());
    let leftovers = std::fs::read_dir(agent.dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("kiln-put")
        })
        .count();
    assert_eq!(leftovers, 0);
}

#[tokio::test]
async fn client_vanishing_mid_stream_kills_its_command_and_cleans_its_put() {
    let mut agent = Agent::start(&[]);

    // An endless producer; the client reads a bit, then disappears.
    let client = agent.client().await;
    let mut exec = client.exec(ExecRequest::argv(["yes"])).await.unwrap();
    let pid = exec.pid();
    assert!(matches!(
        exec.next_event().await.unwrap(),
        Some(ExecEvent::Stdout(_))
    ));
    drop(exec);
    drop(client);
    assert!(
        wait_dead(pid).await,
        "command {pid} kept running after its client left"
    );

    // A put cut off before its end.
    let mut s = handshaken(&agent).await;
    let target = agent.path("partial");
    let path = target.to_str().unwrap().to_string();
    send(
        &mut s,
        &ClientFrame {
            id: 1,
            msg: ClientMsg::PutBegin { path, mode: 0o644 },
        },
    )
    .await;
    send(
        &mut s,
        &ClientFrame {
            id: 1,
            msg: ClientMsg::PutData(vec![7; 1000]),
        },
    )
    .await;
    drop(s);
    still_serves(&mut agent).await;
    assert!(!target.exists());
    let tmp_gone = common::wait_until(|| {
        std::fs::read_dir(agent.dir.path()).unwrap().all(|e| {
            !e.unwrap()
                .file_name()
                .to_string_lossy()
                .contains("kiln-put")
        })
    })
    .await;
    assert!(tmp_gone, "temporary file of the broken put was left behind");

    // A new client gets normal service, including a killed-by-timeout command.
    let client = agent.client().await;
    let out = client
        .exec_buffered(
            ExecRequest::argv(["sleep", "5"]).timeout(std::time::Duration::from_millis(100)),
        )
        .await
        .unwrap();
    assert_eq!(out.status, ExitStatus::Signal(libc::SIGKILL));
}
