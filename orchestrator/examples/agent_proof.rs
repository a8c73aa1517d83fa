//! Boots an image with Kiln's `vmm` and proves its guest agent works, with no shell:
//! waits for the agent's announcement, runs a command (stdout, stderr, exit code),
//! puts and gets a file, asks for poweroff and checks `vmm` exits 0. Prints timings.
//!
//! ```sh
//! cargo build --release -p vmm && cargo build -p orchestrator --example agent_proof
//! IMG=$(./target/debug/orchestrator image build debian-minimal)
//! ./target/debug/orchestrator emulated-host run -- \
//!     ./target/debug/examples/agent_proof "$IMG" ./target/release/vmm
//! ```
//!
//! `KILN_PROOF_VMM_ARGS` adds whitespace-separated arguments to `vmm`.
//! An image with a `rootfs.ext4` boots from it as `/dev/vda` (read-write): pass a
//! private copy as a third argument (`cp --reflink=auto --sparse=always`), or one is
//! made in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use agent::client::{accept_announcement, announce_socket_path};
use agent::{Client, ExecRequest, ExitStatus};
use anyhow::{bail, ensure, Context, Result};
use orchestrator::image::Manifest;
use tokio::net::UnixListener;
use tokio::process::Command;

/// Guest CID given to the VM.
const GUEST_CID: u32 = 3;
/// Boot budget: a systemd node under nested KVM in TCG takes up to about a minute.
const READY_TIMEOUT: Duration = Duration::from_secs(300);

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(image), Some(vmm)) = (args.next(), args.next()) else {
        bail!("usage: agent_proof IMAGE_DIR PATH/TO/vmm [ROOT_DISK_COPY]");
    };
    let disk_copy = args.next().map(PathBuf::from);
    let image = PathBuf::from(image);
    let manifest_path = image.join("manifest.json");
    let manifest = Manifest::from_json(
        &std::fs::read_to_string(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?,
    )?;
    let work = tempfile::tempdir()?;
    let uds = work.path().join("v.sock");
    let serial = work.path().join("serial.log");
    // Bound before the VM starts, so the announcement cannot be missed.
    let announcements = UnixListener::bind(announce_socket_path(&uds, 10701))?;

    let mut vmm_cmd = Command::new(&vmm);
    vmm_cmd
        .arg("--kernel")
        .arg(image.join("vmlinuz"))
        .arg("--initrd")
        .arg(image.join("initrd.img"))
        .arg("--cmdline")
        .arg(format!("{} kiln.hostname=proof", manifest.cmdline))
        .arg("--mem")
        .arg("512")
        .arg("--vsock")
        .arg(format!("cid={GUEST_CID},uds={}", uds.display()))
        .arg("--serial")
        .arg(&serial)
        .args(
            std::env::var("KILN_PROOF_VMM_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if manifest.file("rootfs.ext4").is_some() {
        let disk = match disk_copy {
            Some(disk) => disk,
            None => {
                let disk = work.path().join("root.ext4");
                copy_sparse(&image.join("rootfs.ext4"), &disk).await?;
                disk
            }
        };
        vmm_cmd.arg("--disk").arg(&disk);
    }

    let started = Instant::now();
    let mut vmm_child = vmm_cmd.spawn().context("starting vmm")?;
    let info = tokio::select! {
        info = tokio::time::timeout(READY_TIMEOUT, accept_announcement(&announcements)) => {
            info.context("no agent announcement in time")??
        }
        status = vmm_child.wait() => {
            bail!("vmm exited before the agent was ready ({:?}); serial:\n{}", status?, tail(&serial));
        }
    };
    let ready = started.elapsed();
    println!("agent ready after {ready:.2?}: {info:?}");

    let client = Client::connect_vsock_uds(&uds, 10700).await?;
    let uname = client
        .exec_buffered(ExecRequest::argv(["uname", "-a"]))
        .await?;
    ensure!(uname.status == ExitStatus::Code(0), "uname -a: {uname:?}");
    print!("guest: {}", String::from_utf8_lossy(&uname.stdout));
    let out = client
        .exec_buffered(ExecRequest::shell(
            "echo to-stdout; echo to-stderr >&2; exit 7",
        ))
        .await?;
    ensure!(out.stdout == b"to-stdout\n", "stdout: {out:?}");
    ensure!(out.stderr == b"to-stderr\n", "stderr: {out:?}");
    ensure!(out.status == ExitStatus::Code(7), "exit code: {out:?}");

    let blob: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let put_at = Instant::now();
    client.put_bytes(&blob, "/tmp/proof.bin", 0o640).await?;
    let back = client.get_bytes("/tmp/proof.bin").await?;
    ensure!(back == blob, "file came back different");
    let sum = client
        .exec_buffered(ExecRequest::shell("stat -c '%s %a' /tmp/proof.bin"))
        .await?;
    ensure!(sum.stdout == b"1000000 640\n", "stat: {sum:?}");
    println!("exec, put+get of 1 MB ok ({:.2?})", put_at.elapsed());

    client.poweroff().await?;
    let status = tokio::time::timeout(READY_TIMEOUT, vmm_child.wait())
        .await
        .context("vmm did not exit after poweroff")??;
    let off = started.elapsed();
    ensure!(
        status.success(),
        "vmm exited with {status}; serial:\n{}",
        tail(&serial)
    );
    println!(
        "timings: vmm start -> agent ready {ready:.2?}, -> vmm exited 0 after poweroff {off:.2?}"
    );
    Ok(())
}

/// A private copy of the root disk (reflink when the filesystem can, sparse otherwise).
async fn copy_sparse(from: &Path, to: &Path) -> Result<()> {
    let status = Command::new("cp")
        .args(["--reflink=auto", "--sparse=always"])
        .arg(from)
        .arg(to)
        .status()
        .await?;
    ensure!(status.success(), "cp {} failed", from.display());
    Ok(())
}

/// The last lines of the serial log, for failure messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
