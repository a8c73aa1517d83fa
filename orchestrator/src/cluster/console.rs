//! Reading a node's serial log for `wait_for_console_text`.
//!
//! Like the NixOS test driver, matching consumes: each match moves a cursor past the line it
//! ended in, so waiting twice for the same text needs it printed twice. Starting a node moves
//! the cursor to the end of the log, so earlier boots never match.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use regex::bytes::Regex;

/// A cursor into a serial log file.
#[derive(Debug)]
pub struct Console {
    path: PathBuf,
    cursor: u64,
}

impl Console {
    /// A cursor at the start of `path` (which may not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Console {
        Console {
            path: path.into(),
            cursor: 0,
        }
    }

    /// Moves the cursor to the current end of the log.
    pub fn skip_to_end(&mut self) {
        self.cursor = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
    }

    /// Searches the log after the cursor; on a match returns the matching line(s) and moves
    /// the cursor past them.
    pub fn find(&mut self, pattern: &Regex) -> std::io::Result<Option<String>> {
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(self.cursor))?;
        let mut text = Vec::new();
        file.read_to_end(&mut text)?;
        let Some(m) = pattern.find(&text) else {
            return Ok(None);
        };
        let line_start = text[..m.start()]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let line_end = text[m.end()..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(text.len(), |i| m.end() + i + 1);
        self.cursor += line_end as u64;
        let line = String::from_utf8_lossy(&text[line_start..line_end]);
        Ok(Some(line.trim_end_matches(['\r', '\n']).to_string()))
    }

    /// The last `lines` lines of the log (for error messages).
    pub fn tail(&self, lines: usize) -> String {
        tail_of(&self.path, lines)
    }
}

/// The last `lines` lines of a text file, or a note that it cannot be read.
pub fn tail_of(path: &std::path::Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("({} cannot be read: {e})", path.display()),
    }
}
