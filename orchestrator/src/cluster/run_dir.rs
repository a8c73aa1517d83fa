//! The run directory of one cluster run: switch sockets and one subdirectory per node.
//!
//! ```text
//! <run>/net-<network>.sock        switch socket of each network
//! <run>/<node>/api.sock           vmm control API
//! <run>/<node>/vsock.sock         vmm vsock muxer (Firecracker convention)
//! <run>/<node>/serial.log         guest serial console
//! <run>/<node>/vmm.log            vmm's own stdout and stderr
//! <run>/<node>/root.img           copy of the image's root disk
//! <run>/<node>/disk<N>.img        extra data disks, sparse
//! <run>/<node>/faults.jsonl       every fault its vmm injected (vmm --fault-log)
//! <run>/<node>/faults.toml        the fault rules its vmm started with, when it has some
//! ```
//!
//! Unix socket addresses hold at most 107 bytes of path, so every socket path is checked
//! when a node directory is created: a too deep run directory fails early and clearly.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::error::{ClusterError, Result};

/// Longest path a Unix socket address can hold (`sun_path` is 108 bytes with the NUL).
pub const MAX_SOCKET_PATH: usize = 107;
/// Longest socket name created in a node directory: the agent's announcement socket
/// (`vsock.sock_<port>`, see agent/README.md) with the longest port number.
const LONGEST_NODE_SOCKET: &str = "vsock.sock_4294967295";

/// Paths of one node inside the run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePaths {
    /// The node's directory.
    pub dir: PathBuf,
    /// Control API socket.
    pub api_sock: PathBuf,
    /// vsock Unix socket.
    pub vsock_sock: PathBuf,
    /// Serial console log.
    pub serial_log: PathBuf,
    /// vmm's stdout and stderr.
    pub vmm_log: PathBuf,
    /// Root disk copy.
    pub root_disk: PathBuf,
    /// The fault log (`vmm --fault-log`), appended to by every start of the node.
    pub fault_log: PathBuf,
    /// The fault rules the node's `vmm` starts with (`vmm --faults`), while it has any.
    pub faults_file: PathBuf,
}

impl NodePaths {
    /// The paths of a node whose directory is `dir`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> NodePaths {
        let dir = dir.into();
        NodePaths {
            api_sock: dir.join("api.sock"),
            vsock_sock: dir.join("vsock.sock"),
            serial_log: dir.join("serial.log"),
            vmm_log: dir.join("vmm.log"),
            root_disk: dir.join("root.img"),
            fault_log: dir.join("faults.jsonl"),
            faults_file: dir.join("faults.toml"),
            dir,
        }
    }

    /// The `index`-th extra data disk (0 is the guest's `vdb` when there is a root disk).
    pub fn data_disk(&self, index: usize) -> PathBuf {
        self.dir.join(format!("disk{index}.img"))
    }

    /// Socket files a `vmm` leaves behind when it is killed (it removes them itself on a
    /// clean exit): the API socket, the vsock socket and its `<vsock>_<port>` listeners.
    pub fn socket_files(&self) -> Vec<PathBuf> {
        let mut found = vec![self.api_sock.clone(), self.vsock_sock.clone()];
        let prefix = format!("{}_", file_name(&self.vsock_sock));
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    found.push(e.path());
                }
            }
        }
        found
    }

    /// Removes the socket files a killed `vmm` left behind. Missing files are fine.
    pub fn remove_sockets(&self) -> Result<()> {
        for path in self.socket_files() {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ClusterError::io("removing stale socket", path)(e)),
            }
        }
        Ok(())
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// What [`RunDir::finish`] leaves behind. Socket files always go (their processes are).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retain {
    /// Nothing: the directory is removed.
    Nothing,
    /// Logs and reports; disk images (`*.img`) are removed.
    Logs,
    /// Everything but sockets, disks included.
    All,
}

impl Retain {
    fn from_keep(keep: bool) -> Retain {
        if keep {
            Retain::All
        } else {
            Retain::Nothing
        }
    }
}

/// One run's directory. Removed by [`RunDir::finish`] or on drop, unless kept; a kept
/// directory still loses its socket files (their processes are gone).
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    retain: Retain,
    finished: bool,
}

impl RunDir {
    /// A new, uniquely named run directory under `<cache>/run/` ([`crate::cache::cache_root`]).
    pub fn create_default(keep: bool) -> Result<RunDir> {
        Self::create_in(&crate::cache::cache_root().join("run"), keep)
    }

    /// A new, uniquely named run directory (`cluster-XXXXXX`) inside `parent`.
    pub fn create_in(parent: &Path, keep: bool) -> Result<RunDir> {
        std::fs::create_dir_all(parent).map_err(ClusterError::io(
            "creating the run directory parent",
            parent,
        ))?;
        let dir = tempfile::Builder::new()
            .prefix("cluster-")
            .tempdir_in(parent)
            .map_err(ClusterError::io("creating a run directory in", parent))?;
        let path = std::path::absolute(dir.keep())
            .map_err(ClusterError::io("resolving the run directory", parent))?;
        Self::checked(path, keep)
    }

    /// Uses `path` as the run directory, creating it; it must not hold anything yet.
    pub fn at(path: &Path, keep: bool) -> Result<RunDir> {
        let path = std::path::absolute(path).map_err(ClusterError::io("resolving", path))?;
        std::fs::create_dir_all(&path)
            .map_err(ClusterError::io("creating the run directory", &path))?;
        let mut entries = std::fs::read_dir(&path)
            .map_err(ClusterError::io("reading the run directory", &path))?;
        if entries.next().is_some() {
            return Err(ClusterError::Io {
                what: "using the run directory".into(),
                path,
                source: std::io::Error::other("it is not empty; pick a new directory"),
            });
        }
        Self::checked(path, keep)
    }

    fn checked(path: PathBuf, keep: bool) -> Result<RunDir> {
        let retain = Retain::from_keep(keep);
        let run = RunDir {
            path,
            retain,
            finished: false,
        };
        register(&run.path, retain);
        let text = run.path.to_string_lossy();
        if text.contains(',') || text.contains('=') {
            return Err(ClusterError::BadPathChar {
                path: run.path.clone(),
            });
        }
        Ok(run)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the directory is kept at the end.
    pub fn keeps(&self) -> bool {
        self.retain != Retain::Nothing
    }

    /// Keep the directory at the end (or not).
    pub fn set_keep(&mut self, keep: bool) {
        self.set_retain(Retain::from_keep(keep));
    }

    /// Choose what stays at the end, also when a signal ends the process.
    pub fn set_retain(&mut self, retain: Retain) {
        self.retain = retain;
        register(&self.path, retain);
    }

    /// The switch socket of `network`.
    pub fn switch_socket(&self, network: &str) -> PathBuf {
        self.path.join(format!("net-{network}.sock"))
    }

    /// The paths of node `name` (the directory may not exist yet).
    pub fn node(&self, name: &str) -> NodePaths {
        NodePaths::in_dir(self.path.join(name))
    }

    /// Creates node `name`'s directory, checking that its socket paths fit.
    pub fn create_node(&self, name: &str) -> Result<NodePaths> {
        let paths = self.node(name);
        check_socket_path(&paths.dir.join(LONGEST_NODE_SOCKET))?;
        std::fs::create_dir_all(&paths.dir)
            .map_err(ClusterError::io("creating the node directory", &paths.dir))?;
        Ok(paths)
    }

    /// Removes the directory, or only its socket files when kept. Idempotent.
    pub fn finish(&mut self) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        unregister(&self.path);
        if self.retain != Retain::Nothing {
            tracing::info!(path = %self.path.display(), "run directory kept");
        }
        finish_dir(&self.path, self.retain)
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::warn!(error = %e, "run directory cleanup failed");
        }
    }
}

/// Fails when `path` cannot be a Unix socket address.
pub fn check_socket_path(path: &Path) -> Result<()> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(ClusterError::PathTooLong {
            path: path.to_path_buf(),
            len,
            max: MAX_SOCKET_PATH,
        });
    }
    Ok(())
}

fn finish_dir(path: &Path, retain: Retain) -> Result<()> {
    match retain {
        Retain::All => remove_sockets_under(path),
        Retain::Logs => remove_files_under(path, &|p: &Path, kind: std::fs::FileType| {
            use std::os::unix::fs::FileTypeExt;
            kind.is_socket() || is_disk_image(p)
        }),
        Retain::Nothing => match std::fs::remove_dir_all(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ClusterError::io("removing the run directory", path)(e)),
        },
    }
}

/// Whether `path` is a node's disk image (`root.img`, `disk<N>.img`): what goes when only
/// logs and reports are kept.
pub fn is_disk_image(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "img")
}

/// Removes every socket file in `dir` and its subdirectories.
pub fn remove_sockets_under(dir: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    remove_files_under(dir, &|_, kind: std::fs::FileType| kind.is_socket())
}

/// Removes the disk images (`*.img`) and sockets under `dir`, keeping logs and reports.
pub fn remove_disks_and_sockets_under(dir: &Path) -> Result<()> {
    finish_dir(dir, Retain::Logs)
}

/// Removes every file under `dir` (recursively) for which `doomed` says so.
fn remove_files_under(dir: &Path, doomed: &dyn Fn(&Path, std::fs::FileType) -> bool) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ClusterError::io("reading", dir)(e)),
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if kind.is_dir() {
            remove_files_under(&path, doomed)?;
        } else if doomed(&path, kind) {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ClusterError::io("removing", &path)(e)),
            }
        }
    }
    Ok(())
}

/// Copies an image's root disk for one node: a reflink where the filesystem can, sparse
/// otherwise (`cp --reflink=auto --sparse=always`), so a 1.5 GiB image costs little.
pub fn copy_root_disk(node: &str, image: &Path, dest: &Path) -> Result<()> {
    let disk_err = |reason: String| ClusterError::Disk {
        node: node.to_string(),
        path: dest.to_path_buf(),
        reason,
    };
    let out = Command::new("cp")
        .args(["--reflink=auto", "--sparse=always", "--"])
        .arg(image)
        .arg(dest)
        .output()
        .map_err(|e| disk_err(format!("cannot run cp: {e}")))?;
    if !out.status.success() {
        return Err(disk_err(format!(
            "cp from {} failed ({}): {}",
            image.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Creates an empty sparse data disk of `size` bytes (no blocks allocated).
pub fn create_data_disk(node: &str, path: &Path, size: u64) -> Result<()> {
    let file = std::fs::File::create(path).and_then(|f| f.set_len(size).map(|()| f));
    file.map(drop).map_err(|e| ClusterError::Disk {
        node: node.to_string(),
        path: path.to_path_buf(),
        reason: format!("cannot create a sparse file of {size} bytes: {e}"),
    })
}

/// Makes `format` on the disk file at `path`, labelled `label`; lazy initialisation keeps
/// the file sparse (a 4 GiB disk costs a few MiB).
pub fn format_data_disk(
    node: &str,
    path: &Path,
    format: crate::spec::DiskFormat,
    label: &str,
) -> Result<()> {
    let crate::spec::DiskFormat::Ext4 = format;
    let fail = |reason: String| ClusterError::Disk {
        node: node.to_string(),
        path: path.to_path_buf(),
        reason,
    };
    let out = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", label])
        .args(["-E", "lazy_itable_init=1,lazy_journal_init=1"])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| fail(format!("cannot run mkfs.ext4 ({e}); install e2fsprogs")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(format!(
            "mkfs.ext4 failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn registry() -> std::sync::MutexGuard<'static, std::collections::BTreeMap<PathBuf, Retain>> {
    static DIRS: std::sync::Mutex<std::collections::BTreeMap<PathBuf, Retain>> =
        std::sync::Mutex::new(std::collections::BTreeMap::new());
    DIRS.lock().unwrap_or_else(|p| p.into_inner())
}

fn register(path: &Path, retain: Retain) {
    registry().insert(path.to_path_buf(), retain);
}

fn unregister(path: &Path) {
    registry().remove(path);
}

/// Finishes every run directory of this process that is still open (for signal handlers,
/// where destructors do not run): removed, or stripped of sockets when kept.
pub fn finish_all_registered() {
    let all: Vec<(PathBuf, Retain)> = std::mem::take(&mut *registry()).into_iter().collect();
    for (path, retain) in all {
        if let Err(e) = finish_dir(&path, retain) {
            tracing::warn!(error = %e, "run directory cleanup failed");
        }
    }
}
