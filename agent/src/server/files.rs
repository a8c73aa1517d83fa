//! File requests: put (streamed, hash-checked, atomic rename), get (streamed with a
//! trailing hash), stat and list.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::fs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::connection::Outbox;
use crate::protocol::{ClientMsg, DirEntry, ErrorKind, FileKind, FileStat, ServerMsg, CHUNK_LEN};

/// Makes temporary names unique when several puts target the same file at once.
static PUT_SEQ: AtomicU64 = AtomicU64::new(0);

fn kind_of(e: &io::Error) -> ErrorKind {
    match e.kind() {
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        _ => ErrorKind::Io,
    }
}

/// Receives a file into a temporary sibling, checks its hash, then renames it into place.
pub(crate) async fn put(path: &str, mode: u32, mut inbox: mpsc::Receiver<ClientMsg>, out: &Outbox) {
    let target = PathBuf::from(path);
    let Some(name) = target.file_name() else {
        out.error(ErrorKind::InvalidRequest, format!("{path:?} names no file"))
            .await;
        return;
    };
    let tmp = target.with_file_name(format!(
        ".{}.kiln-put-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        PUT_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = receive(&tmp, mode, &mut inbox).await;
    let msg = match result {
        Ok(size) => match fs::rename(&tmp, &target).await {
            Ok(()) => ServerMsg::PutDone { size },
            Err(e) => ServerMsg::Error {
                kind: kind_of(&e),
                message: format!("renaming into {path}: {e}"),
            },
        },
        Err((kind, message)) => ServerMsg::Error { kind, message },
    };
    if matches!(msg, ServerMsg::Error { .. }) {
        let _ = fs::remove_file(&tmp).await;
    }
    out.send(msg).await;
}

async fn receive(
    tmp: &Path,
    mode: u32,
    inbox: &mut mpsc::Receiver<ClientMsg>,
) -> Result<u64, (ErrorKind, String)> {
    let io_err = |what: &str, e: io::Error| (kind_of(&e), format!("{what} {}: {e}", tmp.display()));
    // Private until complete: the final mode is applied only after the hash check.
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .await
        .map_err(|e| io_err("creating", e))?;
    let mut hasher = blake3::Hasher::new();
    let mut size = 0u64;
    loop {
        match inbox.recv().await {
            Some(ClientMsg::PutData(data)) => {
                hasher.update(&data);
                size += data.len() as u64;
                file.write_all(&data)
                    .await
                    .map_err(|e| io_err("writing", e))?;
            }
            Some(ClientMsg::PutEnd { hash }) => {
                if hasher.finalize() != blake3::Hash::from_bytes(hash) {
                    return Err((
                        ErrorKind::HashMismatch,
                        "content does not match the client's BLAKE3 hash".into(),
                    ));
                }
                break;
            }
            Some(other) => {
                return Err((ErrorKind::InvalidRequest, format!("{other:?} during a put")))
            }
            None => return Err((ErrorKind::Io, "connection closed during a put".into())),
        }
    }
    file.flush().await.map_err(|e| io_err("flushing", e))?;
    file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))
        .await
        .map_err(|e| io_err("chmod", e))?;
    file.sync_all().await.map_err(|e| io_err("syncing", e))?;
    Ok(size)
}

/// Streams a file to the client, followed by the BLAKE3 of what was sent.
pub(crate) async fn get(path: &str, out: &Outbox) {
    let mut file = match fs::File::open(path).await {
        Ok(f) => f,
        Err(e) => {
            out.error(kind_of(&e), format!("opening {path}: {e}")).await;
            return;
        }
    };
    let meta = match file.metadata().await {
        Ok(m) if m.is_dir() => {
            out.error(ErrorKind::InvalidRequest, format!("{path} is a directory"))
                .await;
            return;
        }
        Ok(m) => m,
        Err(e) => {
            out.error(kind_of(&e), format!("stat {path}: {e}")).await;
            return;
        }
    };
    let begin = ServerMsg::GetBegin {
        size: meta.len(),
        mode: meta.mode() & 0o7777,
    };
    if !out.send(begin).await {
        return;
    }
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK_LEN];
    loop {
        match file.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                if !out.send(ServerMsg::GetData(buf[..n].to_vec())).await {
                    return;
                }
            }
            Err(e) => {
                out.error(kind_of(&e), format!("reading {path}: {e}")).await;
                return;
            }
        }
    }
    out.send(ServerMsg::GetEnd {
        hash: *hasher.finalize().as_bytes(),
    })
    .await;
}

fn to_stat(meta: &std::fs::Metadata) -> FileStat {
    let ft = meta.file_type();
    let kind = if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    };
    FileStat {
        kind,
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        mtime: meta.mtime(),
    }
}

/// Answers with the metadata of `path` (a final symlink is not followed).
pub(crate) async fn stat(path: &str, out: &Outbox) {
    let msg = match fs::symlink_metadata(path).await {
        Ok(meta) => ServerMsg::Stat(to_stat(&meta)),
        Err(e) => ServerMsg::Error {
            kind: kind_of(&e),
            message: format!("stat {path}: {e}"),
        },
    };
    out.send(msg).await;
}

/// Answers with the entries of directory `path`, sorted by name.
pub(crate) async fn list(path: &str, out: &Outbox) {
    let msg = match read_dir_sorted(path).await {
        Ok(entries) => ServerMsg::List(entries),
        Err(e) => ServerMsg::Error {
            kind: kind_of(&e),
            message: format!("listing {path}: {e}"),
        },
    };
    out.send(msg).await;
}

async fn read_dir_sorted(path: &str) -> io::Result<Vec<DirEntry>> {
    let mut dir = fs::read_dir(path).await?;
    let mut entries = Vec::new();
    while let Some(entry) = dir.next_entry().await? {
        // An entry removed between readdir and lstat is simply skipped.
        let Ok(meta) = fs::symlink_metadata(entry.path()).await else {
            continue;
        };
        entries.push(DirEntry {
            name: entry.file_name().to_string_lossy().into_owned(),
            stat: to_stat(&meta),
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}
