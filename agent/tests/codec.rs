//! The frame decoder on fixed inputs: round trips, truncation, oversize, and the fuzz
//! seeds (plus deterministic mutations of them) run through the same entry point as the
//! fuzzer (`decode_client_stream`).

use agent::codec::{decode_client_stream, FrameCodec, FrameError};
use agent::protocol::{ClientFrame, ClientMsg, Command, ExecRequest, MAX_FRAME_LEN};
use bytes::BytesMut;
use tokio_util::codec::Encoder;

fn sample_frames() -> Vec<ClientFrame> {
    let msgs = vec![
        ClientMsg::Hello { version: 1 },
        ClientMsg::Exec(ExecRequest {
            command: Command::Argv(vec!["ls".into(), "-l".into()]),
            env: vec![("A".into(), "b".into())],
            clear_env: true,
            cwd: Some("/tmp".into()),
            stdin: true,
            timeout_ms: Some(1500),
        }),
        ClientMsg::Exec(ExecRequest::shell("echo hi | wc -c")),
        ClientMsg::Stdin(vec![0, 1, 2, 255]),
        ClientMsg::StdinEof,
        ClientMsg::Kill,
        ClientMsg::PutBegin {
            path: "/etc/x".into(),
            mode: 0o644,
        },
        ClientMsg::PutData(vec![9; 1000]),
        ClientMsg::PutEnd { hash: [7; 32] },
        ClientMsg::Get {
            path: "/etc/hostname".into(),
        },
        ClientMsg::Stat { path: "/".into() },
        ClientMsg::List { path: "/".into() },
        ClientMsg::IsUnitActive {
            unit: "sshd.service".into(),
        },
        ClientMsg::IsPortOpen { port: 22 },
        ClientMsg::FileExists {
            path: "/run/ready".into(),
        },
        ClientMsg::Hostname,
        ClientMsg::Uptime,
        ClientMsg::Sync,
        ClientMsg::Poweroff,
        ClientMsg::Reboot,
    ];
    msgs.into_iter()
        .enumerate()
        .map(|(i, msg)| ClientFrame {
            id: i as u64 * 1000 + 1,
            msg,
        })
        .collect()
}

fn encode_all(frames: &[ClientFrame]) -> Vec<u8> {
    let mut codec = FrameCodec::<(), ClientFrame>::new();
    let mut buf = BytesMut::new();
    for f in frames {
        codec.encode(f.clone(), &mut buf).unwrap();
    }
    buf.to_vec()
}

#[test]
fn every_message_round_trips() {
    let frames = sample_frames();
    let (decoded, err) = decode_client_stream(&encode_all(&frames));
    assert!(err.is_none(), "{err:?}");
    assert_eq!(decoded, frames);
}

#[test]
fn every_truncation_yields_the_complete_frames_then_an_error() {
    let frames = sample_frames();
    let bytes = encode_all(&frames[..4]);
    let mut boundaries = vec![0];
    for f in &frames[..4] {
        let last = *boundaries.last().unwrap();
        boundaries.push(last + encode_all(std::slice::from_ref(f)).len());
    }
    for cut in 0..bytes.len() {
        let (decoded, err) = decode_client_stream(&bytes[..cut]);
        let complete = boundaries.iter().filter(|&&b| b <= cut).count() - 1;
        assert_eq!(decoded, frames[..complete], "cut at {cut}");
        assert_eq!(
            err.is_some(),
            !boundaries.contains(&cut),
            "cut at {cut}: {err:?}"
        );
    }
}

#[test]
fn oversized_length_is_rejected_before_reading_the_body() {
    let mut bytes = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0; 16]);
    let (decoded, err) = decode_client_stream(&bytes);
    assert!(decoded.is_empty());
    assert!(matches!(err, Some(FrameError::Io(_))), "{err:?}");
}

#[test]
fn encoder_refuses_frames_above_the_maximum() {
    let mut codec = FrameCodec::<(), ClientFrame>::new();
    let mut buf = BytesMut::new();
    let big = ClientFrame {
        id: 1,
        msg: ClientMsg::Stdin(vec![0; MAX_FRAME_LEN]),
    };
    let err = codec.encode(big, &mut buf).unwrap_err();
    assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
    assert!(buf.is_empty());
}

/// Seeds committed under agent/fuzz/seeds (the fuzzer's starting corpus), and every
/// single-byte mutation of their first 64 bytes: the decoder returns, never panics.
#[test]
fn fuzz_seeds_and_their_mutations_never_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        seeds.len() >= 5,
        "expected the committed seed corpus in {}",
        dir.display()
    );
    seeds.push(encode_all(&sample_frames()));
    let mut runs = 0;
    for seed in &seeds {
        let _ = decode_client_stream(seed);
        for pos in 0..seed.len().min(64) {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut m = seed.clone();
                m[pos] ^= flip;
                let _ = decode_client_stream(&m);
                runs += 1;
            }
        }
    }
    assert!(runs > 100);
}

/// Regenerates the seed corpus: `KILN_WRITE_SEEDS=1 cargo test -p agent --test codec write_seeds -- --ignored`.
#[test]
#[ignore]
fn write_seeds() {
    if std::env::var_os("KILN_WRITE_SEEDS").is_none() {
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, f) in sample_frames().iter().enumerate() {
        std::fs::write(
            dir.join(format!("frame-{i:02}")),
            encode_all(std::slice::from_ref(f)),
        )
        .unwrap();
    }
    std::fs::write(dir.join("all-frames"), encode_all(&sample_frames())).unwrap();
    std::fs::write(
        dir.join("oversized"),
        ((MAX_FRAME_LEN + 1) as u32).to_be_bytes(),
    )
    .unwrap();
    std::fs::write(dir.join("unknown-variant"), [0, 0, 0, 3, 1, 0xC8, 1]).unwrap();
    std::fs::write(dir.join("truncated"), [0, 0, 0, 100, 1, 1, 1]).unwrap();
}

#[test]
fn every_agent_message_round_trips() {
    use agent::codec::{decode_body, encode_body};
    use agent::protocol::{
        DirEntry, ErrorKind, ExitStatus, FileKind, FileStat, ServerFrame, ServerMsg,
    };
    let stat = FileStat {
        kind: FileKind::File,
        size: 5,
        mode: 0o644,
        mtime: -3,
    };
    let msgs = vec![
        ServerMsg::Hello {
            version: 1,
            agent_version: "0.1.0".into(),
            hostname: "n1".into(),
        },
        ServerMsg::Started { pid: 42 },
        ServerMsg::Stdout(vec![1, 2, 3]),
        ServerMsg::Stderr(vec![]),
        ServerMsg::Exited {
            status: ExitStatus::Signal(9),
            timed_out: true,
        },
        ServerMsg::Exited {
            status: ExitStatus::Code(-1),
            timed_out: false,
        },
        ServerMsg::PutDone { size: u64::MAX },
        ServerMsg::GetBegin {
            size: 10,
            mode: 0o755,
        },
        ServerMsg::GetData(vec![0xff; 300]),
        ServerMsg::GetEnd { hash: [3; 32] },
        ServerMsg::Stat(stat.clone()),
        ServerMsg::List(vec![DirEntry {
            name: "é x".into(),
            stat,
        }]),
        ServerMsg::UnitState {
            active: false,
            state: "failed".into(),
        },
        ServerMsg::Bool(true),
        ServerMsg::Hostname("h".into()),
        ServerMsg::Uptime(123_456),
        ServerMsg::Ok,
        ServerMsg::Error {
            kind: ErrorKind::HashMismatch,
            message: "m".into(),
        },
    ];
    for (i, msg) in msgs.into_iter().enumerate() {
        let frame = ServerFrame {
            id: i as u64 + 1,
            msg,
        };
        let body = encode_body(&frame).unwrap();
        assert_eq!(decode_body::<ServerFrame>(&body).unwrap(), frame);
    }
}
