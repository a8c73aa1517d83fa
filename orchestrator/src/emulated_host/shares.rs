//! Which host directories the emulated host mounts read-write, at which paths.

use std::path::{Path, PathBuf};

/// A host directory shared read-write over 9p at the same path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// 9p mount tag (short, unique).
    pub tag: String,
    /// Absolute host path, also the mount point inside.
    pub path: PathBuf,
}

/// Deduplicate and order the directories to share: paths inside another shared
/// path are dropped (already visible), the rest get tags `share0`, `share1`...
/// in path order, so parents are mounted before anything below them.
pub fn plan_shares(paths: &[PathBuf]) -> Vec<Share> {
    let mut paths: Vec<PathBuf> = paths.iter().filter(|p| p.is_absolute()).cloned().collect();
    paths.sort();
    paths.dedup();
    let mut kept: Vec<PathBuf> = Vec::new();
    for path in paths {
        if !kept.iter().any(|k| path.starts_with(k)) {
            kept.push(path);
        }
    }
    kept.into_iter()
        .enumerate()
        .map(|(i, path)| Share {
            tag: format!("share{i}"),
            path,
        })
        .collect()
}

/// The `mounts` file read by the host init: `tag path` per line.
pub fn mounts_file(shares: &[Share]) -> String {
    shares
        .iter()
        .map(|s| format!("{} {}\n", s.tag, s.path.display()))
        .collect()
}

/// The Cargo target directory of the workspace containing `cwd`, if any:
/// `$CARGO_TARGET_DIR`, else `target/` next to the outermost `Cargo.toml`
/// above `cwd`, else the `target` directory this executable runs from.
pub fn target_dir(cwd: &Path) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        return Some(if dir.is_absolute() {
            dir
        } else {
            cwd.join(dir)
        });
    }
    let workspace = cwd
        .ancestors()
        .filter(|d| d.join("Cargo.toml").is_file())
        .last()
        .map(|d| d.join("target"));
    if let Some(dir) = workspace.filter(|d| d.is_dir()) {
        return Some(dir);
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .find(|d| d.file_name().is_some_and(|n| n == "target"))
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_duplicate_paths_are_dropped() {
        let shares = plan_shares(&[
            PathBuf::from("/work/repo"),
            PathBuf::from("/root/.cache/kiln"),
            PathBuf::from("/work/repo/target"),
            PathBuf::from("/work/repo"),
            PathBuf::from("/work/repository"),
            PathBuf::from("relative"),
        ]);
        let got: Vec<(&str, &str)> = shares
            .iter()
            .map(|s| (s.tag.as_str(), s.path.to_str().unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                ("share0", "/root/.cache/kiln"),
                ("share1", "/work/repo"),
                ("share2", "/work/repository")
            ]
        );
        assert_eq!(mounts_file(&shares[..1]), "share0 /root/.cache/kiln\n");
    }

    #[test]
    fn target_dir_of_a_workspace() {
        let ws = tempfile::tempdir().unwrap();
        let member = ws.path().join("crate/src");
        std::fs::create_dir_all(&member).unwrap();
        std::fs::create_dir_all(ws.path().join("target")).unwrap();
        std::fs::write(ws.path().join("Cargo.toml"), "[workspace]\n").unwrap();
        std::fs::write(ws.path().join("crate/Cargo.toml"), "[package]\n").unwrap();
        if std::env::var_os("CARGO_TARGET_DIR").is_none() {
            assert_eq!(target_dir(&member), Some(ws.path().join("target")));
        }
    }
}
