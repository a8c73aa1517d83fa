//! Finding the workspace's `vmm` binary for tests and benchmarks: `target/<profile>/vmm` next to
//! the running test or bench executable, brought up to date with `cargo build -p vmm` first
//! (a no-op when nothing changed) so that a stale binary is never measured or tested.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::image::agent_bin::workspace_dir;

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
/// target directory, and returns the binary's path. Panics on failure (tests and benches).
pub fn build_vmm(profile_dir: &Path) -> PathBuf {
    try_build_vmm(profile_dir).unwrap_or_else(|e| panic!("{e}"))
}

/// [`build_vmm`] with the failure as a message.
pub fn try_build_vmm(profile_dir: &Path) -> Result<PathBuf, String> {
    try_build_bin(profile_dir, "vmm", "vmm")
}

/// Builds binary `bin` of workspace package `package` for the profile of `profile_dir`
/// into the same target directory (a no-op when up to date); returns its path.
pub fn try_build_bin(profile_dir: &Path, package: &str, bin: &str) -> Result<PathBuf, String> {
    let profile = profile_dir
        .file_name()
        .ok_or_else(|| format!("{} has no profile name", profile_dir.display()))?
        .to_string_lossy()
        .into_owned();
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| format!("{} has no target directory", profile_dir.display()))?;
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .args(["build", "-q", "-p", package, "--bin", bin, "--target-dir"])
        .arg(target_dir)
        .current_dir(workspace_dir());
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cargo.arg("--release");
        }
        other => {
            cargo.args(["--profile", other]);
        }
    }
    let status = cargo
        .status()
        .map_err(|e| format!("running cargo build -p {package}: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build -p {package} failed: {status}"));
    }
    let path = profile_dir.join(bin);
    if !path.is_file() {
        return Err(format!("no {bin} binary at {}", path.display()));
    }
    Ok(path)
}

/// Environment variable naming the `vmm` binary for the orchestrator.
pub const VMM_ENV: &str = "KILN_VMM";

/// The `vmm` for the `orchestrator` binary: `$KILN_VMM`; else, when the workspace it was
/// built from is still there, `vmm` next to the running binary brought up to date by cargo;
/// else a `vmm` next to the running binary or on `PATH`.
pub fn locate_for_cli() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(VMM_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{VMM_ENV}={} is not a file; point it at a vmm binary",
                path.display()
            ))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("path of the running binary: {e}"))?;
    let exe_dir = exe.parent().unwrap_or(Path::new("/")).to_path_buf();
    if workspace_dir().join("Cargo.toml").is_file() && exe_dir.starts_with(workspace_target()) {
        return try_build_vmm(&exe_dir);
    }
    let sibling = exe_dir.join("vmm");
    if sibling.is_file() {
        return Ok(sibling);
    }
    crate::programs::find_on_path("vmm").ok_or_else(|| {
        format!(
            "no vmm binary found: build it (cargo build --release -p vmm) and set {VMM_ENV}=PATH"
        )
    })
}

fn workspace_target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join("target"))
        .canonicalize()
        .unwrap_or_else(|_| workspace_dir().join("target"))
}
