//! Benchmarks of real Debian guests: where they run (directly on hardware KVM, or re-run inside
//! the emulated KVM host on PVM machines) and the QEMU peer they are compared with.

use std::path::{Path, PathBuf};
use std::process::Command;

use orchestrator::host_kind::kvm_can_boot_linux;

const INSIDE: &str = "KILN_BENCH_INSIDE";
const VMM: &str = "KILN_BENCH_VMM";

/// Sample size from `KILN_BENCH_RUNS`, else `default`.
pub fn runs(default: usize) -> usize {
    std::env::var("KILN_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The release `vmm` and the `debian-minimal` image to measure with, here. On a host whose
/// /dev/kvm cannot boot Linux this re-runs the benchmark inside the emulated KVM host and
/// exits with its status instead of returning.
pub fn debian_minimal_here(runs: usize) -> (PathBuf, PathBuf) {
    if let (Ok(img), Ok(vmm)) = (std::env::var(INSIDE), std::env::var(VMM)) {
        return (vmm.into(), img.into());
    }
    let vmm = crate::release_vmm();
    let img = orchestrator::image::build("debian-minimal").expect("image build");
    let kind = kvm_can_boot_linux();
    if kind.can_boot_linux() {
        return (vmm, img.path);
    }
    println!("{}: measuring inside the emulated KVM host", kind.reason());
    let argv = vec![
        "env".into(),
        format!("{INSIDE}={}", img.path.display()),
        format!("{VMM}={}", vmm.display()),
        format!("KILN_BENCH_RUNS={runs}"),
        std::env::current_exe().unwrap().display().to_string(),
        "--bench".into(),
    ];
    let opts = orchestrator::emulated_host::RunOptions::new(argv).unwrap();
    let out = orchestrator::emulated_host::run(&opts).expect("emulated host");
    std::process::exit(out.status);
}

/// QEMU's fastest comparable machine booting the same kernel and initramfs on KVM, serial
/// console on stdio.
pub fn qemu_microvm(img: &Path, cmdline: &str) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-M",
        "microvm,rtc=on",
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-m",
        "256",
    ])
    .args([
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
        "-display",
        "none",
    ])
    .args(["-serial", "stdio", "-kernel"])
    .arg(img.join("vmlinuz"))
    .arg("-initrd")
    .arg(img.join("initrd.img"))
    .args(["-append", cmdline]);
    c
}
