//! A cluster left running (`orchestrator up`, `orchestrator run --keep`): the process that
//! owns it serves a small control endpoint so that `status`, `logs`, `exec` and `stop` work
//! from other terminals.
//!
//! The endpoint is `<run>/control.sock` on hardware KVM; inside the emulated KVM host it is
//! a TCP port that QEMU forwards to `127.0.0.1` outside. `<run>/cluster.json` says which.
//! One request per connection, one line each:
//!
//! | request | answer |
//! |---|---|
//! | `status` | a JSON object: nodes, their state and pids; then close |
//! | `logs NODE` | the node's serial log; then close |
//! | `connect NODE` | `OK` and a byte stream to the node's agent, or `ERR why` |
//! | `stop` | `OK`; the owner tears the cluster down and exits |

pub mod client;
mod server;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use server::{serve, Listener};

/// Name of the state file in the run directory.
pub const STATE_FILE: &str = "cluster.json";

/// What `<run>/cluster.json` records about a held cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldState {
    /// The process that owns the cluster (SIGTERM stops it too).
    pub pid: u32,
    /// `unix:<path>` or `tcp:<addr>`.
    pub control: String,
    /// Node names, in spec order.
    pub nodes: Vec<String>,
}

impl HeldState {
    /// Writes the state into `run_dir` (through a temporary name).
    pub fn write(&self, run_dir: &Path) -> std::io::Result<()> {
        let tmp = run_dir.join(format!(".{STATE_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(tmp, run_dir.join(STATE_FILE))
    }

    /// Reads the state of `run_dir`; the error says how to get a held cluster.
    pub fn read(run_dir: &Path) -> Result<HeldState, String> {
        let path = run_dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|_| {
            format!(
                "no cluster is running in {}: start one with `orchestrator up` or `orchestrator run SCENARIO --keep`",
                run_dir.display()
            )
        })?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Whether the owning process still runs (a zombie does not).
    pub fn owner_alive(&self) -> bool {
        crate::cluster::is_live(self.pid)
    }
}

/// The run directory a command means: `--run-dir`, else the latest run.
pub fn resolve_run_dir(given: Option<&Path>) -> Result<PathBuf, String> {
    match given {
        Some(p) => Ok(p.to_path_buf()),
        None => crate::runner::placement::latest_run_dir().ok_or_else(|| {
            "no runs yet: start a cluster with `orchestrator up` or pass --run-dir".to_string()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_missing_state_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let e = HeldState::read(dir.path()).unwrap_err();
        assert!(e.contains("orchestrator up"), "{e}");
        let state = HeldState {
            pid: std::process::id(),
            control: "unix:/x/control.sock".into(),
            nodes: vec!["a".into(), "b".into()],
        };
        state.write(dir.path()).unwrap();
        let back = HeldState::read(dir.path()).unwrap();
        assert_eq!(back, state);
        assert!(back.owner_alive());
    }
}
