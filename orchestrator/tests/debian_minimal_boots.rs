//! The `debian-minimal` image boots under QEMU (TCG, microvm, virtio-mmio),
//! binds its virtio drivers, loads vsock, and powers itself off.
//! Needs qemu-system-x86_64 and the Debian archive (apt) for the image.

use std::process::{Command, Stdio};

mod common;

use common::say;

fn qemu() -> Option<String> {
    if let Ok(explicit) = std::env::var("KILN_QEMU") {
        return Some(explicit);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("qemu-system-x86_64"))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

#[test]
fn debian_minimal_boots_loads_virtio_modules_and_powers_off() {
    let Some(qemu) = qemu() else {
        say("SKIPPED debian-minimal boot test: qemu-system-x86_64 is not on PATH (install: apt-get install qemu-system-x86)");
        return;
    };
    let built = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["image", "build", "debian-minimal"])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(built.status.success(), "image build failed");
    let dir = String::from_utf8(built.stdout).unwrap().trim().to_string();
    let manifest = std::fs::read_to_string(format!("{dir}/manifest.json")).unwrap();
    assert!(
        manifest.contains("\"vmw_vsock_virtio_transport\""),
        "{manifest}"
    );
    assert!(manifest.contains("\"agent_sha256\""), "{manifest}");

    let scratch = tempfile::tempdir().unwrap();
    let disk = scratch.path().join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    // kiln.noagent: the init reports and powers off instead of handing over to the agent
    // (which needs a vsock device; the agent is proved under Kiln's vmm).
    let output = common::tcg_microvm(&qemu, &dir, 1, 256, "console=ttyS0 panic=-1 kiln.noagent")
        .arg("-drive")
        .arg(format!("if=none,id=d0,format=raw,file={}", disk.display()))
        .args(["-device", "virtio-blk-device,drive=d0"])
        .args([
            "-netdev",
            "user,id=n0,restrict=on",
            "-device",
            "virtio-net-device,netdev=n0",
        ])
        .args(["-device", "virtio-rng-device"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "QEMU failed:\n{console}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = |prefix: &str| {
        console
            .lines()
            .find_map(|l| l.strip_prefix(prefix).map(str::to_string))
            .unwrap_or_else(|| panic!("no `{prefix}` line in console:\n{console}"))
    };
    assert!(line("kiln-init: ready (").starts_with("debian-minimal "));
    let drivers = line("kiln-init: virtio drivers:");
    for driver in ["=virtio_blk", "=virtio_net", "=virtio_rng"] {
        assert!(drivers.contains(driver), "{drivers}");
    }
    let modules = line("kiln-init: modules: ");
    assert!(modules.contains("vmw_vsock_virtio_transport "), "{modules}");
    assert!(console.contains("kiln-init: powering off"), "{console}");
}
