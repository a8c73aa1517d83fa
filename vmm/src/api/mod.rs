//! The control API: JSON requests and replies, one per line, on a Unix socket.
//!
//! See `vmm/API.md` for the wire format. The same operations are methods of
//! [`VmHandle`](crate::VmHandle).

mod server;

pub use server::ApiServer;

use serde::{Deserialize, Serialize};

/// A request, e.g. `{"op":"pause"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// Replace every fault rule (same structure as the rules file; `{}` clears them).
    SetFaults { rules: serde_json::Value },
    /// Report the fault rules in force with their hit counts.
    Faults,
    /// Pull the plug: unflushed writes in write caches are lost (each unflushed 4 KiB block
    /// survives with probability `keep`, default 0), then the VM ends; `vmm` exits 0.
    PowerCut {
        #[serde(default)]
        keep: f64,
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
    /// `faults` and `set_faults`: the rules in force with hit counts.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub faults: Option<devices::fault::FaultReport>,
    /// `power_cut`: what was lost.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub power_cut: Option<crate::faults::PowerCutSummary>,
}

impl Reply {
    pub(crate) fn ok(status: Option<crate::handle::VmStatus>) -> Self {
        Reply {
            ok: true,
            status,
            snapshot: None,
            error: None,
            faults: None,
            power_cut: None,
        }
    }
    pub(crate) fn error(msg: String) -> Self {
        Reply {
            ok: false,
            status: None,
            snapshot: None,
            error: Some(msg),
            faults: None,
            power_cut: None,
        }
    }
}
