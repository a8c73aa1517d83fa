//! Kernel module loading with finit_module(2), from a list file and/or the command line.
//!
//! List format (one module a line, in load order, dependencies first):
//! `NAME_OR_PATH [PARAM=VALUE ...]`; blank lines and `#` comments are ignored. A bare
//! name is looked up as `NAME.ko`, `NAME.ko.xz`, `NAME.ko.zst` or `NAME.ko.gz` under
//! `/lib/modules/$(uname -r)` (`-` and `_` are interchangeable, as with modprobe).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Ask the kernel to decompress the module itself (Linux 6.2+).
const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;

/// One module to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSpec {
    /// A name (`virtio_mmio`) or a path to a `.ko` file.
    pub name: String,
    /// Parameters passed to the module, space-separated.
    pub params: String,
}

/// Parses a module list (see the module documentation for the format).
pub fn parse_module_list(text: &str) -> Vec<ModuleSpec> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (name, params) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            ModuleSpec {
                name: name.to_string(),
                params: params.trim().to_string(),
            }
        })
        .collect()
}

/// Finds the file of a module: paths are taken as they are, names are searched under
/// `modules_dir`.
pub fn resolve_module(name: &str, modules_dir: &Path) -> io::Result<PathBuf> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let wanted: Vec<String> = ["ko", "ko.xz", "ko.zst", "ko.gz"]
        .iter()
        .map(|ext| format!("{}.{ext}", name.replace('-', "_")))
        .collect();
    find_file(modules_dir, &wanted)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("module {name} not found under {}", modules_dir.display()),
        )
    })
}

fn find_file(dir: &Path, wanted: &[String]) -> io::Result<Option<PathBuf>> {
    let mut subdirs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        if ft.is_dir() {
            subdirs.push(entry.path());
        } else if wanted.contains(&entry.file_name().to_string_lossy().replace('-', "_")) {
            return Ok(Some(entry.path()));
        }
    }
    for sub in subdirs {
        if let Some(found) = find_file(&sub, wanted)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// `/lib/modules/<running kernel release>`.
pub fn running_modules_dir() -> PathBuf {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    Path::new("/lib/modules").join(release.trim())
}

/// Loads one module file. Already loaded is success.
pub fn finit_module(path: &Path, params: &str) -> io::Result<()> {
    let file = File::open(path)?;
    let params = CString::new(params).map_err(io::Error::other)?;
    let name = path.to_string_lossy();
    let flags = if name.ends_with(".ko") {
        0
    } else {
        MODULE_INIT_COMPRESSED_FILE
    };
    // SAFETY: a valid fd and NUL-terminated parameter string living across the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            params.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EEXIST) {
        return Ok(());
    }
    Err(err)
}

/// Loads every module in order; a failure is logged and the next one is tried (a
/// missing optional driver should not stop the guest from booting).
pub fn load_all(specs: &[ModuleSpec], modules_dir: &Path) -> usize {
    let mut loaded = 0;
    for spec in specs {
        let result =
            resolve_module(&spec.name, modules_dir).and_then(|p| finit_module(&p, &spec.params));
        match result {
            Ok(()) => {
                loaded += 1;
                tracing::info!(module = %spec.name, "module loaded");
            }
            Err(e) => tracing::warn!(module = %spec.name, error = %e, "module not loaded"),
        }
    }
    loaded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_params_and_comments() {
        let specs = parse_module_list(
            "# virtio first\nvirtio_mmio\n\n  /lib/x/vsock.ko  \nkvm_amd nested=1 avic=0 # comment\n",
        );
        assert_eq!(
            specs,
            [
                ModuleSpec {
                    name: "virtio_mmio".into(),
                    params: "".into()
                },
                ModuleSpec {
                    name: "/lib/x/vsock.ko".into(),
                    params: "".into()
                },
                ModuleSpec {
                    name: "kvm_amd".into(),
                    params: "nested=1 avic=0".into()
                },
            ]
        );
    }

    #[test]
    fn resolves_names_in_a_module_tree() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("kernel/drivers/virtio");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("virtio_mmio.ko.xz"), b"").unwrap();
        std::fs::write(deep.join("vmw-vsock.ko"), b"").unwrap();
        assert_eq!(
            resolve_module("virtio_mmio", dir.path()).unwrap(),
            deep.join("virtio_mmio.ko.xz")
        );
        assert_eq!(
            resolve_module("vmw_vsock", dir.path()).unwrap(),
            deep.join("vmw-vsock.ko")
        );
        let err = resolve_module("nope", dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            resolve_module("/a/b.ko", dir.path()).unwrap(),
            Path::new("/a/b.ko")
        );
    }

    #[test]
    fn loading_a_non_module_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let bogus = dir.path().join("bogus.ko");
        std::fs::write(&bogus, b"not an ELF module").unwrap();
        // Either ENOEXEC (root) or EPERM (no CAP_SYS_MODULE): an error, never a crash.
        assert!(finit_module(&bogus, "").is_err());
        assert!(finit_module(&dir.path().join("missing.ko"), "").is_err());
    }
}
