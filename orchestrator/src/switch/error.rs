//! Errors returned by the switch and its handle.

use std::io;
use std::path::PathBuf;

/// What went wrong starting or controlling a switch.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// The switch socket could not be bound.
    #[error("cannot bind switch socket {path}: {source} (is another switch using it, or is the directory missing?)")]
    Bind {
        /// Socket path.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// A socket operation needed to set up the switch failed.
    #[error("switch setup failed: {0}")]
    Setup(#[source] io::Error),
    /// The switch thread could not be started.
    #[error("cannot start switch thread: {0}")]
    Thread(#[source] io::Error),
    /// A peer address without a name (unbound socket) cannot be a port.
    #[error("peer address is unnamed: bind the peer socket to a path or an abstract name first")]
    UnnamedPeer,
    /// The node name is already attached to a different address.
    #[error("node {node} is already attached to {existing}; detach it first")]
    NodeAttached {
        /// Node name.
        node: String,
        /// The address it is attached to.
        existing: String,
    },
    /// A loss probability outside 0.0..=1.0.
    #[error("loss probability {0} is outside 0.0..=1.0")]
    BadLoss(f64),
    /// The switch thread panicked.
    #[error("switch thread panicked")]
    ThreadPanicked,
}
