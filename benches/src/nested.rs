//! Benchmarks of real Debian guests: where they run (directly on hardware KVM, or re-run inside
//! the emulated KVM host on PVM machines) and the QEMU peer they are compared with.

use std::path::{Path, PathBuf};
use std::process::Command;

use orchestrator::host_kind::kvm_can_boot_linux;

const INSIDE: &str = "KILN_BENCH_INSIDE";
const VMM: &str = "KILN_BENCH_VMM";
const BASELINE: &str = "KILN_BENCH_VMM_BASELINE";

/// A second `vmm` binary to measure beside this build's (`KILN_BENCH_VMM_BASELINE`), e.g. one
/// built from an older commit, so that before/after figures come from one run.
pub fn baseline_vmm() -> Option<PathBuf> {
    std::env::var_os(BASELINE)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Sample size from `KILN_BENCH_RUNS`, else `default`.
pub fn runs(default: usize) -> usize {
    std::env::var("KILN_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The release `vmm` and the images to measure with, here; `prepare` runs first, outside the
/// emulated host (for work that is slow inside it, such as copying disks), with the image
/// directories. On a host whose /dev/kvm cannot boot Linux this re-runs the benchmark inside the
/// emulated KVM host and exits with its status instead of returning.
pub fn images_here(
    runs: usize,
    names: &[&str],
    prepare: impl FnOnce(&[PathBuf]),
) -> (PathBuf, Vec<PathBuf>) {
    if let (Ok(imgs), Ok(vmm)) = (std::env::var(INSIDE), std::env::var(VMM)) {
        return (vmm.into(), imgs.split(':').map(PathBuf::from).collect());
    }
    let vmm = crate::release_vmm();
    let imgs: Vec<PathBuf> = names
        .iter()
        .map(|n| orchestrator::image::build(n).expect("image build").path)
        .collect();
    prepare(&imgs);
    let kind = kvm_can_boot_linux();
    if kind.can_boot_linux() {
        return (vmm, imgs);
    }
    println!("{}: measuring inside the emulated KVM host", kind.reason());
    let joined: Vec<String> = imgs.iter().map(|p| p.display().to_string()).collect();
    let argv = vec![
        "env".into(),
        format!("{INSIDE}={}", joined.join(":")),
        format!("{VMM}={}", vmm.display()),
        format!("KILN_BENCH_RUNS={runs}"),
        format!(
            "{BASELINE}={}",
            baseline_vmm()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ),
        std::env::current_exe().unwrap().display().to_string(),
        "--bench".into(),
    ];
    let mut opts = orchestrator::emulated_host::RunOptions::new(argv).unwrap();
    opts.cpus = orchestrator::runner::placement::emulated_host_cpus();
    let out = orchestrator::emulated_host::run(&opts).expect("emulated host");
    std::process::exit(out.status);
}

/// Like [`images_here`] for `debian-minimal` alone.
pub fn debian_minimal_here(runs: usize) -> (PathBuf, PathBuf) {
    let (vmm, mut imgs) = images_here(runs, &["debian-minimal"], |_| {});
    (vmm, imgs.remove(0))
}

/// Where a benchmark keeps per-run disk copies: in the Kiln cache, which the emulated host
/// shares, so copies made outside (fast, sparse) are usable inside.
pub fn disk_dir(bench: &str) -> PathBuf {
    orchestrator::cache::cache_root().join("bench").join(bench)
}

/// A sparse copy of `from` at `to` (made outside the emulated host, where it is fast).
pub fn sparse_copy(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .args(["--reflink=auto", "--sparse=always"])
        .arg(from)
        .arg(to)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "copying {} failed", from.display());
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
