//! Snapshot directories appear atomically: everything is written under a temporary name
//! beside the target, fsynced, and renamed into place (never over anything). A crash leaves
//! only the temporary directory, which the next snapshot to the same place removes.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::SnapshotError;

/// A snapshot directory being written.
pub struct PendingDir {
    target: PathBuf,
    temp: PathBuf,
    committed: bool,
}

fn dir_error(path: &Path, e: io::Error) -> SnapshotError {
    SnapshotError::Io(format!("{}: {e}", path.display()))
}

impl PendingDir {
    /// Starts a snapshot at `target`, which must not exist; its parent must.
    pub fn create(target: &Path) -> Result<PendingDir, SnapshotError> {
        if target.symlink_metadata().is_ok() {
            return Err(SnapshotError::Exists(target.to_path_buf()));
        }
        let name = target
            .file_name()
            .ok_or_else(|| SnapshotError::BadPath(target.to_path_buf()))?;
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            return Err(SnapshotError::NoParent(target.to_path_buf()));
        }
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(".partial");
        let temp = parent.join(temp_name);
        if temp.symlink_metadata().is_ok() {
            // Left by a snapshot that died; nothing refers to it.
            std::fs::remove_dir_all(&temp).map_err(|e| dir_error(&temp, e))?;
        }
        std::fs::create_dir(&temp).map_err(|e| dir_error(&temp, e))?;
        Ok(PendingDir {
            target: target.to_path_buf(),
            temp,
            committed: false,
        })
    }

    /// Creates a new file `name` in the directory.
    pub fn create_file(&self, name: &str) -> Result<File, SnapshotError> {
        let path = self.temp.join(name);
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| dir_error(&path, e))
    }

    /// Makes the directory appear at its target, durably.
    pub fn commit(mut self) -> Result<PathBuf, SnapshotError> {
        sync_dir(&self.temp)?;
        rename_noreplace(&self.temp, &self.target).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => SnapshotError::Exists(self.target.clone()),
            _ => dir_error(&self.target, e),
        })?;
        self.committed = true;
        let parent = self.target.parent().filter(|p| !p.as_os_str().is_empty());
        sync_dir(parent.unwrap_or(Path::new(".")))?;
        Ok(self.target.clone())
    }
}

impl Drop for PendingDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.temp);
        }
    }
}

fn sync_dir(path: &Path) -> Result<(), SnapshotError> {
    let d = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| dir_error(path, e))?;
    d.sync_all().map_err(|e| dir_error(path, e))
}

/// rename(2) that fails instead of replacing an (empty) directory at `to`.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: two valid NUL-terminated paths; the call touches no memory of ours.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bytes the files of `dir` take on disk (holes excluded).
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    ["state", "memory"]
        .iter()
        .filter_map(|n| std::fs::metadata(dir.join(n)).ok())
        .map(|m| m.blocks() * 512)
        .sum()
}
