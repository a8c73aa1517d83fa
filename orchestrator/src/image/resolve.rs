//! Resolving a recipe's packages to exact pins, memoized per apt state.
//!
//! `apt-cache` takes about a second per call here, which would dominate a warm
//! (cached) build. The answer only changes when apt's lists, sources or pins
//! change, so it is memoized under a fingerprint of those files' names, sizes
//! and modification times.

use super::apt::{self, PackagePin};
use super::error::ImageError;
use super::recipe::Recipe;
use crate::cache::KeyHasher;
use std::path::Path;
use std::time::UNIX_EPOCH;

/// apt state that decides candidate versions.
const APT_STATE: &[&str] = &[
    "/var/lib/apt/lists",
    "/etc/apt/sources.list",
    "/etc/apt/sources.list.d",
    "/etc/apt/preferences",
    "/etc/apt/preferences.d",
    "/etc/apt/apt.conf.d",
];

/// Exact pins for a recipe: kernel metapackage, kernel image, file packages,
/// then the packages named for the root filesystem.
pub fn pins_for(recipe: &Recipe, memo_dir: &Path) -> Result<Vec<PackagePin>, ImageError> {
    let mut key = KeyHasher::new("kiln-resolve/1");
    key.field(recipe.spec.kernel.as_bytes());
    for file in &recipe.spec.files {
        key.field(file.package.as_bytes());
    }
    for package in recipe.rootfs_packages() {
        key.field(package.as_bytes());
    }
    fingerprint(&mut key, APT_STATE.iter().map(Path::new));
    let memo = memo_dir.join(format!("{}.json", key.finish()));
    if let Some(pins) = std::fs::read_to_string(&memo)
        .ok()
        .and_then(|text| serde_json::from_str::<Vec<PackagePin>>(&text).ok())
    {
        return Ok(pins);
    }
    let (kernel_meta, kernel) = apt::resolve_kernel(&recipe.spec.kernel)?;
    let mut pins = vec![kernel_meta, kernel];
    for file in &recipe.spec.files {
        if !pins.iter().any(|p| p.name == file.package) {
            pins.push(apt::resolve(&file.package)?);
        }
    }
    pins.extend(apt::resolve_many(recipe.rootfs_packages())?);
    // The memo is an optimisation: failing to write it is not an error.
    if std::fs::create_dir_all(memo_dir).is_ok() {
        if let Ok(json) = serde_json::to_string(&pins) {
            let tmp = memo.with_extension("tmp");
            if std::fs::write(&tmp, json).is_ok() {
                let _ = std::fs::rename(&tmp, &memo);
            }
        }
    }
    Ok(pins)
}

/// Hash the names, sizes and mtimes of `paths` and the files directly in them.
pub fn fingerprint<'a>(key: &mut KeyHasher, paths: impl Iterator<Item = &'a Path>) {
    for path in paths {
        key.field(path.as_os_str().as_encoded_bytes());
        stat_field(key, path);
        if let Ok(entries) = std::fs::read_dir(path) {
            let mut names: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            names.sort();
            for name in names {
                key.field(name.as_os_str().as_encoded_bytes());
                stat_field(key, &name);
            }
        }
    }
}

fn stat_field(key: &mut KeyHasher, path: &Path) {
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            key.field(&meta.len().to_le_bytes())
                .field(&mtime.to_le_bytes());
        }
        Err(_) => {
            key.field(b"missing");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn print(dir: &Path) -> String {
        let mut key = KeyHasher::new("t");
        fingerprint(&mut key, [dir].into_iter());
        key.finish()
    }

    #[test]
    fn fingerprint_follows_apt_list_changes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a_Packages"), "Package: x\n").unwrap();
        let before = print(dir.path());
        assert_eq!(before, print(dir.path()));
        std::fs::write(dir.path().join("a_Packages"), "Package: x\nVersion: 2\n").unwrap();
        let grown = print(dir.path());
        assert_ne!(before, grown);
        std::fs::write(dir.path().join("b_Packages"), "").unwrap();
        assert_ne!(grown, print(dir.path()));
    }
}
