//! The control API: JSON requests and replies, one per line, on a Unix socket.
//!
//! See `vmm/API.md` for the wire format. The same operations are methods of
//! [`VmHandle`](crate::VmHandle).

mod server;

pub use server::ApiServer;

use serde::{Deserialize, Serialize};

/// A request, e.g. `{"op":"pause"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Report the VM's state.
    Status,
    /// Pause every vCPU.
    Pause,
    /// Resume after a pause.
    Resume,
    /// Stop the VM; the `vmm` process exits 0.
    Shutdown,
    /// Snapshot the paused VM into the new directory `dir`: `kind` is `full` (default) or
    /// `diff` against `parent`.
    Snapshot {
        dir: std::path::PathBuf,
        #[serde(default)]
        kind: Option<String>,
        #[serde(default)]
        parent: Option<std::path::PathBuf>,
    },
}

/// A reply: `{"ok":true, ...}` or `{"ok":false,"error":"..."}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<crate::handle::VmStatus>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub snapshot: Option<crate::snapshot::SnapshotInfo>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

impl Reply {
    pub(crate) fn ok(status: Option<crate::handle::VmStatus>) -> Self {
        Reply {
            ok: true,
            status,
            snapshot: None,
            error: None,
        }
    }
    pub(crate) fn error(msg: String) -> Self {
        Reply {
            ok: false,
            status: None,
            snapshot: None,
            error: Some(msg),
        }
    }
}
