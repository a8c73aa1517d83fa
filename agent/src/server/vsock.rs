//! The guest transport: an AF_VSOCK listener, and the start-up announcement to the host.
//! Not testable without a VM; kept small on purpose.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use tokio_util::codec::FramedWrite;
use tokio_vsock::{VsockAddr, VsockListener, VsockStream, VMADDR_CID_ANY, VMADDR_CID_HOST};

use super::{announce, serve_connection, ServerOptions};
use crate::codec::FrameCodec;
use crate::protocol::{ClientFrame, ServerFrame};

/// How long to retry binding while the vsock transport driver is still probing.
const BIND_ATTEMPTS: u32 = 50;
const BIND_RETRY: Duration = Duration::from_millis(100);

/// Listens on vsock `port` (any CID), prints the ready line, optionally announces itself
/// to the host on `announce_port`, and serves connections until an accept error.
pub async fn serve_vsock(
    port: u32,
    options: ServerOptions,
    announce_port: Option<u32>,
) -> io::Result<()> {
    let listener = bind_retrying(port).await?;
    announce(&format!("vsock:{port}"));
    if let Some(host_port) = announce_port {
        tokio::spawn(async move {
            // The host may not listen for announcements; the agent works either way.
            if let Err(e) = announce_to_host(host_port).await {
                tracing::info!(port = host_port, error = %e, "no host announcement");
            }
        });
    }
    let options = Arc::new(options);
    loop {
        let (stream, peer) = listener.accept().await?;
        tracing::debug!(%peer, "vsock connection");
        tokio::spawn(serve_connection(stream, options.clone()));
    }
}

async fn bind_retrying(port: u32) -> io::Result<VsockListener> {
    let mut attempt = 1;
    loop {
        match VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, port)) {
            Ok(listener) => return Ok(listener),
            Err(e) if attempt < BIND_ATTEMPTS => {
                tracing::debug!(attempt, error = %e, "vsock bind failed, retrying");
                attempt += 1;
                tokio::time::sleep(BIND_RETRY).await;
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "binding vsock port {port}: {e} (is the vsock transport module loaded?)"
                    ),
                ))
            }
        }
    }
}

/// Connects to the host (CID 2) on `port` and sends one `Hello` frame (id 0), so the host
/// learns the agent is up without polling. On a Firecracker-style VMM the host receives it
/// on the Unix socket `<vsock uds>_<port>`.
pub async fn announce_to_host(port: u32) -> io::Result<()> {
    let stream = VsockStream::connect(VsockAddr::new(VMADDR_CID_HOST, port)).await?;
    let mut sink = FramedWrite::new(stream, FrameCodec::<ClientFrame, ServerFrame>::new());
    let hello = super::announcement();
    sink.send(hello).await.map_err(io::Error::other)?;
    Ok(())
}
