//! Boot time of a stock Debian kernel (`debian-minimal`: cloud kernel + busybox initramfs)
//! under Kiln's `vmm`, next to QEMU (`-M microvm -accel kvm`) booting the same kernel and
//! initramfs on the same KVM, in the same run: time from launch to the init's first line on
//! the serial console, and to power-off (process exit).
//!
//! On a host whose /dev/kvm cannot boot Linux (PVM), the benchmark re-runs itself inside the
//! emulated KVM host, so both sides are measured on nested KVM there.
//!
//! Run: `cargo bench -p kiln-benches --bench debian_boot` (KILN_BENCH_RUNS, default 8).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_benches::{nested, Percentiles};

const FIRST_LINE: &str = "kiln-init: ready";

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs = nested::runs(8);
    let (vmm, img) = nested::debian_minimal_here(runs);
    measure(&vmm, &img, runs);
}

fn measure(vmm: &Path, img: &Path, runs: usize) {
    // `kiln.noagent`: the init reports and powers off by itself instead of starting the agent.
    let cmdline = "console=ttyS0 quiet panic=-1 kiln.noagent";
    let kernel = img.join("vmlinuz");
    let initrd = img.join("initrd.img");
    let kiln = || {
        let mut c = Command::new(vmm);
        c.arg("--kernel")
            .arg(&kernel)
            .arg("--initrd")
            .arg(&initrd)
            .args(["--cmdline", cmdline, "--mem", "256", "--serial", "stdout"]);
        c
    };
    let qemu = || nested::qemu_microvm(img, cmdline);
    println!("debian-minimal boot, {runs} runs each, seconds from launch");
    let mut rows = Vec::new();
    for (name, make) in [
        ("kiln vmm", &kiln as &dyn Fn() -> Command),
        ("qemu microvm", &qemu),
    ] {
        let (mut init, mut off) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            match boot_once(make()) {
                Ok((i, o)) => {
                    init.push(i.as_secs_f64());
                    off.push(o.as_secs_f64());
                }
                Err(e) => println!("  {name}: run failed: {e}"),
            }
        }
        if init.is_empty() {
            println!("  {name}: no successful run");
            continue;
        }
        let (i, o) = (Percentiles::of(&mut init), Percentiles::of(&mut off));
        println!("{}", i.row(&format!("{name} to first init line"), "s"));
        println!("{}", o.row(&format!("{name} to power-off"), "s"));
        rows.push((name, i, o));
    }
    if let [(_, ki, ko), (_, qi, qo)] = rows.as_slice() {
        println!(
            "ratio kiln / qemu (p50): first init line {:.2}, power-off {:.2}",
            ki.p50 / qi.p50,
            ko.p50 / qo.p50
        );
    }
}

/// Launches a VM, returns (time to the first init line, time to exit).
fn boot_once(mut cmd: Command) -> Result<(Duration, Duration), String> {
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().unwrap();
    let mut first = None;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if first.is_none() && line.contains(FIRST_LINE) {
            first = Some(t.elapsed());
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let off = t.elapsed();
    match first {
        Some(f) if status.success() => Ok((f, off)),
        Some(_) => Err(format!("exited with {status}")),
        None => Err(format!("no '{FIRST_LINE}' line; exited with {status}")),
    }
}
