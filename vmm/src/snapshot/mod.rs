//! Snapshots of a running VM and restores of them, in this or another process, as many times
//! as wanted.
//!
//! A snapshot is a directory with two files: `state` (header, machine state, checksum; see
//! [`format`]) and `memory` (guest RAM, sparse; see [`memory_file`]). A diff snapshot's memory
//! file holds only the pages written since its parent, and restoring it restores the chain.
//! [`crate::VmHandle::snapshot`] takes one; [`crate::restore`] brings one back.

pub mod cpu_model;
pub mod dir;
pub mod format;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod load;
pub mod memory_file;
mod park;
pub mod state;
pub(crate) mod take;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use load::{load, LoadedSnapshot};

/// Which snapshot to take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotKind {
    /// Every page of guest memory (zero pages as holes).
    Full,
    /// Only the pages written since `parent`, which must be the last snapshot this VM took or
    /// was restored from.
    Diff { parent: PathBuf },
}

/// A snapshot just taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Where it is.
    pub dir: PathBuf,
    /// Bytes it takes on disk (holes in the memory file excluded).
    pub bytes: u64,
    /// Milliseconds it took, from request to directory in place.
    pub ms: u64,
}

/// Why a snapshot could not be taken or loaded; each message is one line naming the problem
/// and the fix.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("pause first: a snapshot is taken of a paused VM")]
    NotPaused,
    #[error("{0} already exists: snapshot to a new path")]
    Exists(PathBuf),
    #[error("{0} is not a usable snapshot path: give a directory path to create")]
    BadPath(PathBuf),
    #[error("{0}: its parent directory does not exist: create it first")]
    NoParent(PathBuf),
    #[error("the VM is shutting down")]
    Stopped,
    #[error("diff snapshot: {0}")]
    Diff(String),
    #[error("saving the VM failed: {0}")]
    Save(String),
    #[error("snapshot I/O: {0}")]
    Io(String),
    #[error("snapshot {dir}: {why}")]
    Load { dir: PathBuf, why: String },
}
