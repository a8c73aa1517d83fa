//! Errors seen by the host client.

use std::io;

use crate::codec::FrameError;
use crate::protocol::ErrorKind;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Local or socket I/O.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// A frame could not be encoded or decoded.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The VMM's vsock socket refused the `CONNECT` (no agent listening on that port?).
    #[error(
        "vsock CONNECT to port {port} failed: {reply:?} (is the agent listening on that port?)"
    )]
    VsockConnect {
        /// Guest port asked for.
        port: u32,
        /// What the VMM answered.
        reply: String,
    },
    /// The agent closed the connection before answering.
    #[error("connection to the agent closed")]
    Closed,
    /// The agent reported an error.
    #[error("agent error ({kind:?}): {message}")]
    Remote {
        /// Category.
        kind: ErrorKind,
        /// Message from the agent.
        message: String,
    },
    /// The agent sent a message that does not fit the request.
    #[error("unexpected answer from the agent: {0}")]
    Unexpected(String),
    /// A buffered exec produced more output than the caller accepts.
    #[error("command output exceeds {limit} bytes; use Client::exec to stream it")]
    OutputTooLarge {
        /// The limit per stream, in bytes.
        limit: usize,
    },
    /// Received data does not match the hash the agent computed.
    #[error("integrity check failed: received data does not match the agent's BLAKE3 hash")]
    HashMismatch,
}

/// Result of client operations.
pub type Result<T> = std::result::Result<T, ClientError>;
