//! The `debian-node` image boots systemd from rootfs.ext4 under QEMU and starts
//! etcd, nginx, haproxy and the NFS server. Opt-in (KILN_TEST_NODE_IMAGE=1):
//! the root filesystem takes about two minutes to build the first time.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::say;

#[test]
fn debian_node_boots_to_login_with_its_services() {
    if std::env::var_os("KILN_TEST_NODE_IMAGE").is_none() {
        say("SKIPPED debian-node boot test: set KILN_TEST_NODE_IMAGE=1 (builds a ~2 minute rootfs with mmdebstrap)");
        return;
    }
    let built = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["image", "build", "debian-node"])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(built.status.success(), "image build failed");
    let dir = String::from_utf8(built.stdout).unwrap().trim().to_string();
    let qemu = std::env::var("KILN_QEMU").unwrap_or("qemu-system-x86_64".into());
    let mut qemu = common::tcg_microvm(
        &qemu,
        &dir,
        2,
        1024,
        "console=ttyS0 panic=-1 kiln.root=/dev/vda",
    )
    .arg("-drive")
    .arg(format!(
        "if=none,id=d0,format=raw,snapshot=on,file={dir}/rootfs.ext4"
    ))
    .args([
        "-device",
        "virtio-blk-device,drive=d0",
        "-device",
        "virtio-rng-device",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut console = qemu.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = console.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if seen.windows(6).any(|w| w == b"login:") {
                break;
            }
        }
        let _ = tx.send(String::from_utf8_lossy(&seen).into_owned());
    });
    // A hang guard, not a speed assertion: TCG boots it in ~30 s.
    let deadline = Instant::now() + Duration::from_secs(600);
    let text = rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .unwrap_or_default();
    let _ = qemu.kill();
    let _ = qemu.wait();
    assert!(text.contains("login:"), "no login prompt:\n{text}");
    assert!(!text.contains("FAILED"), "a unit failed:\n{text}");
    for unit in [
        "etcd.service",
        "nginx.service",
        "haproxy.service",
        "nfs-server.service",
    ] {
        assert!(text.contains(unit), "{unit} did not start:\n{text}");
    }
}
