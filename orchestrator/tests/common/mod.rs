//! Shared by the QEMU boot tests of the images.

use std::io::Write;
use std::process::Command;

/// Prints past libtest's capture, so a skip is never silent.
pub fn say(message: &str) {
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// QEMU under TCG with the microvm machine booting image `dir` (its vmlinuz and initrd.img),
/// serial console on stdout; `append` gets `tsc_early_khz=` so a busy host cannot hang the
/// guest's timer calibration. Callers add disks and devices.
pub fn tcg_microvm(qemu: &str, dir: &str, smp: u32, mem_mib: u32, append: &str) -> Command {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let tsc = orchestrator::emulated_host::qemu::host_tsc_khz(&cpuinfo)
        .map(|k| format!(" tsc_early_khz={k}"))
        .unwrap_or_default();
    let mut c = Command::new(qemu);
    c.args([
        "-accel",
        "tcg,thread=multi",
        "-M",
        "microvm,rtc=on",
        "-cpu",
        "max",
    ])
    .args([
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
        "-display",
        "none",
    ])
    .args(["-chardev", "stdio,id=console,signal=off"])
    .args(["-serial", "chardev:console"])
    .args(["-smp", &smp.to_string(), "-m", &mem_mib.to_string()])
    .arg("-kernel")
    .arg(format!("{dir}/vmlinuz"))
    .arg("-initrd")
    .arg(format!("{dir}/initrd.img"))
    .arg("-append")
    .arg(format!("{append}{tsc}"));
    c
}
