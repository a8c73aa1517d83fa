//! File transfer: streamed in chunks, integrity checked with BLAKE3 on both ends.

use std::path::Path;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{unexpected, Client, ClientError, Result};
use crate::protocol::{ClientMsg, ServerMsg, CHUNK_LEN};

/// What a completed get received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetInfo {
    /// Bytes received (hash-verified).
    pub size: u64,
    /// Permission bits of the guest file.
    pub mode: u32,
}

impl Client {
    /// Streams `reader` into the guest file `path` with permission bits `mode`. The agent
    /// writes a temporary file, checks the BLAKE3 hash the client sends at the end, and
    /// renames it into place only if it matches. Returns the number of bytes written.
    pub async fn put<R: AsyncRead + Unpin>(
        &self,
        mut reader: R,
        path: &str,
        mode: u32,
    ) -> Result<u64> {
        let mut pending = self
            .start(ClientMsg::PutBegin {
                path: path.into(),
                mode,
            })
            .await?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; CHUNK_LEN];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            pending.send(ClientMsg::PutData(buf[..n].to_vec())).await?;
            // The agent may already have failed (e.g. no such directory): stop early.
            if let Ok(msg) = pending.rx.try_recv() {
                return Err(match msg {
                    ServerMsg::Error { kind, message } => ClientError::Remote { kind, message },
                    other => unexpected(other),
                });
            }
        }
        pending
            .send(ClientMsg::PutEnd {
                hash: *hasher.finalize().as_bytes(),
            })
            .await?;
        match pending.recv().await? {
            ServerMsg::PutDone { size } => Ok(size),
            other => Err(unexpected(other)),
        }
    }

    /// Copies a local file into the guest.
    pub async fn put_file(&self, local: impl AsRef<Path>, path: &str, mode: u32) -> Result<u64> {
        let file = tokio::fs::File::open(local.as_ref()).await?;
        self.put(tokio::io::BufReader::new(file), path, mode).await
    }

    /// Writes `data` to a guest file.
    pub async fn put_bytes(&self, data: &[u8], path: &str, mode: u32) -> Result<u64> {
        self.put(data, path, mode).await
    }

    /// Streams the guest file `path` into `writer` and verifies the BLAKE3 hash the agent
    /// sends at the end; on a mismatch returns [`ClientError::HashMismatch`] (the writer
    /// has then received the bad data: write to a temporary place if that matters).
    pub async fn get<W: AsyncWrite + Unpin>(&self, path: &str, mut writer: W) -> Result<GetInfo> {
        let mut pending = self.start(ClientMsg::Get { path: path.into() }).await?;
        let mode = match pending.recv().await? {
            ServerMsg::GetBegin { mode, .. } => mode,
            other => return Err(unexpected(other)),
        };
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        loop {
            match pending.recv().await? {
                ServerMsg::GetData(data) => {
                    hasher.update(&data);
                    size += data.len() as u64;
                    writer.write_all(&data).await?;
                }
                ServerMsg::GetEnd { hash } => {
                    writer.flush().await?;
                    if hasher.finalize() != blake3::Hash::from_bytes(hash) {
                        return Err(ClientError::HashMismatch);
                    }
                    return Ok(GetInfo { size, mode });
                }
                other => return Err(unexpected(other)),
            }
        }
    }

    /// Reads a whole guest file into memory.
    pub async fn get_bytes(&self, path: &str) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        self.get(path, &mut data).await?;
        Ok(data)
    }

    /// Copies a guest file to a local path (written to a temporary sibling, renamed into
    /// place after the hash check).
    pub async fn get_file(&self, path: &str, local: impl AsRef<Path>) -> Result<GetInfo> {
        let local = local.as_ref();
        let mut tmp_name = local.as_os_str().to_owned();
        tmp_name.push(".kiln-get");
        let tmp = std::path::PathBuf::from(tmp_name);
        let file = tokio::fs::File::create(&tmp).await?;
        let mut writer = tokio::io::BufWriter::new(file);
        let result = self.get(path, &mut writer).await;
        match result {
            Ok(info) => {
                drop(writer);
                tokio::fs::rename(&tmp, local).await?;
                Ok(info)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }
}
