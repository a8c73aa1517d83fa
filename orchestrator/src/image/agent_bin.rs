//! The guest agent that goes into images: a static, stripped build of the
//! workspace's `agent` crate, or a ready binary named by `KILN_AGENT_BIN`.
//!
//! The static build uses its own target directory (`<target>/agent-static`) so
//! its `RUSTFLAGS` never invalidate the normal build's artifacts.

use super::error::ImageError;
use crate::cache::sha256_file;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Environment variable naming a prebuilt static agent (skips the build).
pub const AGENT_BIN_ENV: &str = "KILN_AGENT_BIN";

/// The agent's systemd unit for images where systemd is PID 1.
pub const SERVICE_UNIT: &str = include_str!("../../../agent/kiln-agent.service");

/// Name of the unit file.
pub const SERVICE_NAME: &str = "kiln-agent.service";

/// The unit that applies `kiln.hostname=`/`kiln.ip=` under systemd (the agent's
/// `net-setup --from-cmdline`); PID 1 mode does this itself.
pub const NET_UNIT: &str = include_str!("../../../agent/kiln-net.service");

/// Name of the network unit file.
pub const NET_UNIT_NAME: &str = "kiln-net.service";

/// Target triple of the static build (glibc, `+crt-static`).
const TARGET: &str = "x86_64-unknown-linux-gnu";

/// A guest agent binary ready to pack.
#[derive(Debug, Clone)]
pub struct AgentBinary {
    /// The binary.
    pub path: PathBuf,
    /// Its hex SHA-256 (part of the image cache key).
    pub sha256: String,
}

/// The workspace this orchestrator was compiled from.
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `KILN_AGENT_BIN` if set, else a static build of the workspace's agent
/// (cargo's own freshness check makes a warm call cost well under a second).
pub fn locate() -> Result<AgentBinary, ImageError> {
    let path = match std::env::var_os(AGENT_BIN_ENV) {
        Some(path) => {
            let path = PathBuf::from(path);
            if !path.is_file() {
                return Err(build_error(format!(
                    "{AGENT_BIN_ENV}={} is not a file; point it at a static agent binary or unset it",
                    path.display()
                )));
            }
            path
        }
        None => build_static(&workspace_dir())?,
    };
    let sha256 = sha256_file(&path).map_err(ImageError::io("hashing the guest agent", &path))?;
    Ok(AgentBinary { path, sha256 })
}

/// The dedicated target directory of the static build.
pub fn static_target_dir(workspace: &Path) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    target.join("agent-static")
}

/// Build the static agent from `workspace` and return the binary's path.
pub fn build_static(workspace: &Path) -> Result<PathBuf, ImageError> {
    if !workspace.join("agent/Cargo.toml").is_file() {
        return Err(build_error(format!(
            "the Kiln workspace is not at {} (this orchestrator was built elsewhere); set {AGENT_BIN_ENV}=/path/to/static/agent",
            workspace.display()
        )));
    }
    let target_dir = static_target_dir(workspace);
    let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--release", "-p", "agent", "--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(workspace)
        // Outer flags (e.g. from a `cargo test` run) must not leak in.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        // Small initramfs: no debug info, no symbols (31.8 MB -> ~5 MB).
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            build_error(format!(
                "cannot run cargo ({e}); install Rust or set {AGENT_BIN_ENV}=/path/to/static/agent"
            ))
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(build_error(format!(
            "cargo build of the static agent failed:\n{}\n  hint: fix the build or set {AGENT_BIN_ENV}=/path/to/static/agent",
            tail.join("\n")
        )));
    }
    let bin = target_dir.join(TARGET).join("release").join("agent");
    if !bin.is_file() {
        return Err(build_error(format!(
            "cargo succeeded but {} is missing",
            bin.display()
        )));
    }
    Ok(bin)
}

fn build_error(reason: String) -> ImageError {
    ImageError::Agent { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_workspace_is_one_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = build_static(dir.path()).unwrap_err().to_string();
        assert!(err.contains("KILN_AGENT_BIN"), "{err}");
        assert!(err.contains("not at"), "{err}");
    }

    #[test]
    fn workspace_is_the_one_this_crate_lives_in() {
        assert!(workspace_dir().join("agent/Cargo.toml").is_file());
        assert!(SERVICE_UNIT.contains("ExecStart=/usr/local/bin/kiln-agent"));
    }
}
