//! Host side of the agent's start-up announcement (see PROTOCOL.md, "Announcement").

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use tokio::net::UnixListener;
use tokio_util::codec::FramedRead;

use super::{ClientError, Result, ServerInfo};
use crate::codec::FrameCodec;
use crate::protocol::{ClientFrame, ServerFrame, ServerMsg};

/// Where a Firecracker-style VMM delivers guest connections to host port `port`:
/// `<vsock uds>_<port>`.
pub fn announce_socket_path(vsock_uds: impl AsRef<Path>, port: u32) -> PathBuf {
    let mut path = vsock_uds.as_ref().as_os_str().to_owned();
    path.push(format!("_{port}"));
    PathBuf::from(path)
}

/// Accepts one guest connection on `listener` (bound at [`announce_socket_path`]) and
/// reads the agent's announcement.
pub async fn accept_announcement(listener: &UnixListener) -> Result<ServerInfo> {
    let (stream, _) = listener.accept().await?;
    let mut frames = FramedRead::new(stream, FrameCodec::<ServerFrame, ClientFrame>::new());
    match frames.next().await {
        Some(Ok(ServerFrame {
            msg:
                ServerMsg::Hello {
                    version,
                    agent_version,
                    hostname,
                },
            ..
        })) => Ok(ServerInfo {
            version,
            agent_version,
            hostname,
        }),
        Some(Ok(other)) => Err(ClientError::Unexpected(format!("{other:?}"))),
        Some(Err(e)) => Err(e.into()),
        None => Err(ClientError::Closed),
    }
}
