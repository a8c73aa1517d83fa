//! The agent side: accepts connections and serves requests concurrently.

mod connection;
pub mod exec;
mod files;
mod readiness;
pub mod system;
pub mod vsock;

use std::io;
use std::path::Path;
use std::sync::Arc;

use tokio::net::UnixListener;

pub use connection::serve_connection;
pub use system::PowerAction;

/// How the agent behaves; shared by all connections.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// What `Poweroff` and `Reboot` requests do.
    pub power: PowerAction,
}

/// The line printed on stdout once the agent listens (the serial console in a guest).
pub fn ready_line(listen: &str) -> String {
    format!(
        "KILN-AGENT-READY version={} protocol={} listen={}",
        env!("CARGO_PKG_VERSION"),
        crate::protocol::PROTOCOL_VERSION,
        listen
    )
}

/// Listens on a Unix socket (test mode) and serves connections until an accept error.
/// A stale socket file at `path` is replaced.
pub async fn serve_unix(path: &Path, options: ServerOptions) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    announce(&format!("unix:{}", path.display()));
    let options = Arc::new(options);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(serve_connection(stream, options.clone()));
    }
}

/// The frame the agent sends to the host when it starts (and answers a handshake with).
pub fn announcement() -> crate::protocol::ServerFrame {
    use crate::protocol::{ServerFrame, ServerMsg, HANDSHAKE_ID, PROTOCOL_VERSION};
    ServerFrame {
        id: HANDSHAKE_ID,
        msg: ServerMsg::Hello {
            version: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            hostname: system::hostname().unwrap_or_default(),
        },
    }
}

/// Prints the ready line and flushes it so a reader sees it at once.
pub(crate) fn announce(listen: &str) {
    use std::io::Write;
    let mut out = io::stdout().lock();
    // Nothing useful to do if stdout is gone; the socket is what matters.
    let _ = writeln!(out, "{}", ready_line(listen));
    let _ = out.flush();
    tracing::info!(listen, "agent ready");
}
