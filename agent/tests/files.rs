//! File transfer and metadata over the real agent binary.

mod common;

use std::os::unix::fs::PermissionsExt;

use agent::client::ClientError;
use agent::protocol::{ErrorKind, FileKind};
use common::{pattern, Agent};

#[tokio::test]
async fn put_and_get_64_mib_with_hash_check() {
    const SIZE: usize = 64 * 1024 * 1024;
    let agent = Agent::start(&[]);
    let client = agent.client().await;
    let data = pattern(SIZE, 11);
    let remote = agent.path("remote.bin");
    let remote_str = remote.to_str().unwrap();

    let written = client.put_bytes(&data, remote_str, 0o640).await.unwrap();
    assert_eq!(written, SIZE as u64);
    let on_disk = std::fs::read(&remote).unwrap();
    assert_eq!(blake3::hash(&on_disk), blake3::hash(&data));
    drop(on_disk);
    let mode = std::fs::metadata(&remote).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640);

    let local = agent.path("back.bin");
    let info = client.get_file(remote_str, &local).await.unwrap();
    assert_eq!(info.size, SIZE as u64);
    assert_eq!(info.mode, 0o640);
    assert_eq!(
        blake3::hash(&std::fs::read(&local).unwrap()),
        blake3::hash(&data)
    );
}

#[tokio::test]
async fn put_replaces_atomically_and_leaves_no_temporary_files() {
    let agent = Agent::start(&[]);
    let client = agent.client().await;
    let dir = agent.path("d");
    std::fs::create_dir(&dir).unwrap();
    let target = dir.join("f");
    let target = target.to_str().unwrap();
    client.put_bytes(b"first", target, 0o600).await.unwrap();
    client.put_bytes(b"second", target, 0o755).await.unwrap();
    assert_eq!(std::fs::read(target).unwrap(), b"second");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["f"]);
    assert!(client.file_exists(target).await.unwrap());
}

#[tokio::test]
async fn put_into_missing_directory_fails_clearly() {
    let agent = Agent::start(&[]);
    let client = agent.client().await;
    let data = pattern(1024 * 1024, 1);
    let err = client
        .put_bytes(&data, "/nonexistent-kiln-dir/file", 0o644)
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
    // The connection is still usable.
    assert_eq!(client.hostname().await.unwrap(), agent_hostname());
}

fn agent_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test]
async fn get_errors() {
    let agent = Agent::start(&[]);
    let client = agent.client().await;
    let err = client.get_bytes("/nonexistent/kiln").await.unwrap_err();
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
    let dir = agent.dir.path().to_str().unwrap().to_string();
    let err = client.get_bytes(&dir).await.unwrap_err();
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
}

#[tokio::test]
async fn stat_and_list() {
    let agent = Agent::start(&[]);
    let client = agent.client().await;
    let dir = agent.path("tree");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("b.txt"), b"12345").unwrap();
    std::fs::set_permissions(dir.join("b.txt"), std::fs::Permissions::from_mode(0o604)).unwrap();
    std::fs::create_dir(dir.join("a-dir")).unwrap();
    std::os::unix::fs::symlink("b.txt", dir.join("c-link")).unwrap();

    let stat = client
        .stat(dir.join("b.txt").to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(stat.kind, FileKind::File);
    assert_eq!(stat.size, 5);
    assert_eq!(stat.mode, 0o604);

    let entries = client.list(dir.to_str().unwrap()).await.unwrap();
    let summary: Vec<_> = entries
        .iter()
        .map(|e| (e.name.as_str(), e.stat.kind))
        .collect();
    assert_eq!(
        summary,
        [
            ("a-dir", FileKind::Dir),
            ("b.txt", FileKind::File),
            ("c-link", FileKind::Symlink)
        ]
    );
    let err = client.stat("/nonexistent/kiln").await.unwrap_err();
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
    let err = client.list("/nonexistent/kiln").await.unwrap_err();
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
