//! The record of injected faults: one JSON object per line, appended as each fault happens,
//! so a run's log can be read while it runs and survives a killed VMM.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One injected fault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// Seconds since the Unix epoch (microsecond resolution).
    pub time: f64,
    /// `disk<i>`, `nic<i>` or `vsock`.
    pub device: String,
    /// `read`, `write`, `flush` (block); `tx`, `rx` (net); `packet` (vsock).
    pub op: String,
    /// Request, frame or packet number on that device (0-based, in arrival order).
    pub request: u64,
    /// Byte offset of a block request, or the frame length for net.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Length in bytes of the request or frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub len: Option<u64>,
    /// The rule that fired, e.g. `block[0]`.
    pub rule: String,
    /// Its action, e.g. `eio`.
    pub action: String,
    /// Action detail: delay in ms, kept bytes, flipped bits, vsock ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl FaultRecord {
    /// The current time in the record's format.
    pub fn now() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| (d.as_micros() as f64) / 1e6)
    }
}

/// An append-only JSON-lines file.
#[derive(Debug)]
pub struct FaultLog {
    path: PathBuf,
    file: File,
}

impl FaultLog {
    /// Opens (creating or appending to) `path`.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot open fault log {}: {e} (check the directory exists and is writable)",
                        path.display()
                    ),
                )
            })?;
        Ok(FaultLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Where the log goes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record as one line (a single write, so lines never interleave).
    pub fn append(&mut self, record: &FaultRecord) {
        let mut line = match serde_json::to_vec(record) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("fault log: cannot encode record: {e}");
                return;
            }
        };
        line.push(b'\n');
        if let Err(e) = self.file.write_all(&line) {
            tracing::warn!("fault log {}: write failed: {e}", self.path.display());
        }
    }
}

/// Reads a whole log back (tests, reports).
pub fn read_log(path: &Path) -> io::Result<Vec<FaultRecord>> {
    std::fs::read_to_string(path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(io::Error::other))
        .collect()
}
