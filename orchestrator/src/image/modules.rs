//! Kernel module lookup and dependency resolution.
//!
//! Debian kernel packages ship no `modules.dep` (depmod runs at install time), so
//! dependencies are read from each module's own `.modinfo` section (`depends=`),
//! which is what depmod itself uses. A `modules.dep`, when present, is not needed.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

/// Errors while finding or ordering kernel modules.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// The module is neither a `.ko` file nor built into the kernel.
    #[error("kernel module `{0}` not found in the kernel package (not a .ko file, not built in)")]
    NotFound(String),
    /// A dependency cycle (a broken module tree).
    #[error("kernel module dependency cycle through `{0}`")]
    Cycle(String),
    /// The module file could not be parsed.
    #[error("cannot read .modinfo of {path}: {reason}")]
    BadModule {
        /// The module file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Filesystem error.
    #[error("reading kernel modules under {path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// Module names use `_` and `-` interchangeably; the kernel reports `_`.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The `name=` and `depends=` fields of a module's `.modinfo` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModInfo {
    /// Module name (normalized).
    pub name: Option<String>,
    /// Direct dependencies (normalized).
    pub depends: Vec<String>,
}

/// Parse the `.modinfo` section of a module ELF image.
pub fn parse_modinfo(elf: &[u8]) -> Result<ModInfo, String> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(elf).map_err(|e| e.to_string())?;
    let section = file
        .section_by_name(".modinfo")
        .ok_or_else(|| "no .modinfo section".to_string())?;
    let data = section.data().map_err(|e| e.to_string())?;
    Ok(parse_modinfo_strings(data))
}

/// Parse the NUL-separated `key=value` strings of a `.modinfo` section.
pub fn parse_modinfo_strings(data: &[u8]) -> ModInfo {
    let mut info = ModInfo {
        name: None,
        depends: Vec::new(),
    };
    for entry in data.split(|b| *b == 0) {
        let Ok(entry) = std::str::from_utf8(entry) else {
            continue;
        };
        if let Some(deps) = entry.strip_prefix("depends=") {
            info.depends = deps
                .split(',')
                .filter(|d| !d.is_empty())
                .map(normalize)
                .collect();
        } else if let Some(name) = entry.strip_prefix("name=") {
            info.name = Some(normalize(name));
        }
    }
    info
}

/// The modules of one kernel release: `.ko` files by name, and built-in names.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    root: PathBuf,
    files: BTreeMap<String, PathBuf>,
    builtin: HashSet<String>,
}

impl ModuleIndex {
    /// Index `lib/modules/<release>` (file names only; modules are read lazily).
    pub fn scan(root: &Path) -> Result<Self, ModuleError> {
        let mut index = Self {
            root: root.to_path_buf(),
            ..Self::default()
        };
        index.walk(&root.join("kernel"))?;
        let builtin_path = root.join("modules.builtin");
        if let Ok(text) = std::fs::read_to_string(&builtin_path) {
            index.builtin = text.lines().filter_map(module_name_of_path).collect();
        }
        Ok(index)
    }

    fn walk(&mut self, dir: &Path) -> Result<(), ModuleError> {
        let io = |source| ModuleError::Io {
            path: dir.to_path_buf(),
            source,
        };
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let path = entry.path();
            if entry.file_type().map_err(io)?.is_dir() {
                self.walk(&path)?;
            } else if let Some(name) = path.to_str().and_then(module_name_of_path) {
                let rel = path.strip_prefix(&self.root).unwrap_or(&path).to_path_buf();
                self.files.insert(name, rel);
            }
        }
        Ok(())
    }

    /// Path of a module relative to the release directory, if it is a file.
    pub fn relative_path(&self, name: &str) -> Option<&Path> {
        self.files.get(&normalize(name)).map(PathBuf::as_path)
    }

    /// Whether the module is compiled into the kernel.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    /// Direct dependencies of a module file, from its `.modinfo`.
    pub fn depends(&self, name: &str) -> Result<Vec<String>, ModuleError> {
        let rel = self
            .relative_path(name)
            .ok_or_else(|| ModuleError::NotFound(name.to_string()))?;
        let path = self.root.join(rel);
        let bytes = std::fs::read(&path).map_err(|source| ModuleError::Io {
            path: path.clone(),
            source,
        })?;
        parse_modinfo(&bytes)
            .map(|info| info.depends)
            .map_err(|reason| ModuleError::BadModule { path, reason })
    }

    /// Resolve `wanted` into `.ko` modules in load order (dependencies first).
    pub fn load_order(&self, wanted: &[String]) -> Result<Vec<String>, ModuleError> {
        resolve_load_order(wanted, |name| {
            if self.relative_path(name).is_some() {
                self.depends(name).map(Some)
            } else if self.is_builtin(name) {
                Ok(None)
            } else {
                Err(ModuleError::NotFound(name.to_string()))
            }
        })
    }
}

/// `kernel/fs/9p/9p.ko` (or `.ko.xz`, ...) -> `9p`.
fn module_name_of_path(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = file
        .strip_suffix(".ko")
        .or_else(|| file.strip_suffix(".ko.xz"))
        .or_else(|| file.strip_suffix(".ko.zst"))
        .or_else(|| file.strip_suffix(".ko.gz"))?;
    Some(normalize(stem))
}

/// Order modules so that each comes after all of its dependencies.
///
/// `deps_of(name)` returns `Some(direct deps)` for a loadable module and `None`
/// for one built into the kernel (which is left out of the result). Requested
/// order is kept where dependencies allow it.
pub fn resolve_load_order<F>(wanted: &[String], mut deps_of: F) -> Result<Vec<String>, ModuleError>
where
    F: FnMut(&str) -> Result<Option<Vec<String>>, ModuleError>,
{
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    let mut in_progress = BTreeSet::new();
    for name in wanted {
        visit(
            &normalize(name),
            &mut deps_of,
            &mut order,
            &mut done,
            &mut in_progress,
        )?;
    }
    Ok(order)
}

fn visit<F>(
    name: &str,
    deps_of: &mut F,
    order: &mut Vec<String>,
    done: &mut BTreeSet<String>,
    in_progress: &mut BTreeSet<String>,
) -> Result<(), ModuleError>
where
    F: FnMut(&str) -> Result<Option<Vec<String>>, ModuleError>,
{
    if done.contains(name) {
        return Ok(());
    }
    if !in_progress.insert(name.to_string()) {
        return Err(ModuleError::Cycle(name.to_string()));
    }
    if let Some(deps) = deps_of(name)? {
        for dep in deps {
            visit(&normalize(&dep), deps_of, order, done, in_progress)?;
        }
        order.push(name.to_string());
    }
    in_progress.remove(name);
    done.insert(name.to_string());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn graph(edges: &[(&str, &[&str])]) -> HashMap<String, Vec<String>> {
        edges
            .iter()
            .map(|(n, d)| (n.to_string(), d.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    fn order(
        g: &HashMap<String, Vec<String>>,
        builtin: &[&str],
        wanted: &[&str],
    ) -> Result<Vec<String>, ModuleError> {
        let wanted: Vec<String> = wanted.iter().map(|s| s.to_string()).collect();
        resolve_load_order(&wanted, |n| {
            if builtin.contains(&n) {
                Ok(None)
            } else {
                g.get(n)
                    .cloned()
                    .map(Some)
                    .ok_or_else(|| ModuleError::NotFound(n.into()))
            }
        })
    }

    #[test]
    fn dependencies_come_first_and_once() {
        let g = graph(&[
            (
                "vmw_vsock_virtio_transport",
                &[
                    "virtio",
                    "vmw_vsock_virtio_transport_common",
                    "virtio_ring",
                    "vsock",
                ],
            ),
            ("vmw_vsock_virtio_transport_common", &["vsock"]),
            ("vsock", &[]),
            ("virtio", &[]),
            ("virtio_ring", &[]),
            ("virtio_mmio", &["virtio", "virtio_ring"]),
        ]);
        let got = order(&g, &[], &["virtio_mmio", "vmw-vsock-virtio-transport"]).unwrap();
        assert_eq!(
            got,
            [
                "virtio",
                "virtio_ring",
                "virtio_mmio",
                "vsock",
                "vmw_vsock_virtio_transport_common",
                "vmw_vsock_virtio_transport"
            ]
        );
    }

    #[test]
    fn builtin_modules_are_skipped() {
        let g = graph(&[
            ("kvm_amd", &["kvm", "ccp"]),
            ("kvm", &["irqbypass"]),
            ("irqbypass", &[]),
        ]);
        let got = order(&g, &["ccp"], &["ccp", "kvm_amd"]).unwrap();
        assert_eq!(got, ["irqbypass", "kvm", "kvm_amd"]);
    }

    #[test]
    fn missing_module_and_cycles_are_errors() {
        let g = graph(&[("a", &["b"]), ("b", &["a"])]);
        assert!(matches!(order(&g, &[], &["a"]), Err(ModuleError::Cycle(_))));
        assert!(matches!(order(&g, &[], &["zzz"]), Err(ModuleError::NotFound(n)) if n == "zzz"));
    }

    #[test]
    fn modinfo_strings() {
        let data = b"license=GPL\0depends=virtio,virtio-ring\0name=virtio_mmio\0\0vermagic=6.1\0";
        let info = parse_modinfo_strings(data);
        assert_eq!(info.name.as_deref(), Some("virtio_mmio"));
        assert_eq!(info.depends, ["virtio", "virtio_ring"]);
        let empty = parse_modinfo_strings(b"depends=\0name=vsock\0");
        assert!(empty.depends.is_empty());
    }

    #[test]
    fn modinfo_of_non_elf_is_an_error() {
        assert!(parse_modinfo(b"not an elf").is_err());
    }

    #[test]
    fn module_names_from_paths() {
        assert_eq!(
            module_name_of_path("kernel/arch/x86/kvm/kvm-amd.ko").as_deref(),
            Some("kvm_amd")
        );
        assert_eq!(
            module_name_of_path("kernel/fs/9p/9p.ko.xz").as_deref(),
            Some("9p")
        );
        assert_eq!(module_name_of_path("kernel/fs/9p/readme.txt"), None);
    }
}
