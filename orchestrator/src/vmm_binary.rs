//! Finding the workspace's `vmm` binary for tests and benchmarks: `target/<profile>/vmm` next to
//! the running test or bench executable, brought up to date with `cargo build -p vmm` first
//! (a no-op when nothing changed) so that a stale binary is never measured or tested.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The profile directory (`target/<profile>`) of the running test or bench executable, which
/// cargo puts in `target/<profile>/deps/`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the running executable");
    exe.parent()
        .and_then(Path::parent)
        .expect("executable under target/<profile>/deps")
        .to_path_buf()
}

/// Builds `vmm` for the profile of `profile_dir` (debug, release or a custom one) into the same
/// target directory, and returns the binary's path.
pub fn build_vmm(profile_dir: &Path) -> PathBuf {
    let profile = profile_dir
        .file_name()
        .expect("profile directory name")
        .to_string_lossy()
        .into_owned();
    let target_dir = profile_dir.parent().expect("target directory");
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .args(["build", "-q", "-p", "vmm", "--bin", "vmm", "--target-dir"])
        .arg(target_dir);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cargo.arg("--release");
        }
        other => {
            cargo.args(["--profile", other]);
        }
    }
    let status = cargo.status().expect("running cargo build -p vmm");
    assert!(status.success(), "cargo build -p vmm failed: {status}");
    let vmm = profile_dir.join("vmm");
    assert!(vmm.is_file(), "no vmm binary at {}", vmm.display());
    vmm
}
