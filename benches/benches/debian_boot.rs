//! Boot time of a stock Debian kernel (`debian-minimal`: cloud kernel + busybox initramfs)
//! under Kiln's `vmm`, next to QEMU (`-M microvm -accel kvm`) booting the same kernel and
//! initramfs on the same KVM, in the same run: time from launch to the init's first line on
//! the serial console, and to power-off (process exit).
//!
//! On a host whose /dev/kvm cannot boot Linux (PVM), the benchmark re-runs itself inside the
//! emulated KVM host, so both sides are measured on nested KVM there.
//!
//! Run: `cargo bench -p kiln-benches --bench debian_boot` (KILN_BENCH_RUNS, default 8).
//! `KILN_BENCH_VMM_BASELINE=/path/to/an/older/vmm` adds that binary as a third peer, for
//! before/after figures in one run. Peers take turns run by run (A B C A B C ...).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_benches::{nested, Percentiles};

/// One image's boot: its command line and the console line that marks its init starting.
struct Boot<'a> {
    name: &'a str,
    img: &'a Path,
    cmdline: &'a str,
    first_line: &'a str,
    mem: &'a str,
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs = nested::runs(8);
    // A fixed place, so the run inside the emulated host finds what the outer run copied.
    let disks = nested::disk_dir("debian-boot");
    let (vmm, imgs) = nested::images_here(runs, &["debian-minimal", "debian-node"], |imgs| {
        // Every debian-node boot gets a fresh root disk; copies are made here, outside the
        // emulated host, where a sparse copy is fast.
        std::fs::create_dir_all(&disks).unwrap();
        for i in 0..runs {
            for who in ["kiln", "base", "qemu"] {
                let to = disks.join(format!("{who}-{i}.ext4"));
                nested::sparse_copy(&imgs[1].join("rootfs.ext4"), &to);
            }
        }
    });
    // `kiln.noagent`: the init reports and powers off by itself instead of starting the agent.
    let minimal = Boot {
        name: "debian-minimal",
        img: &imgs[0],
        cmdline: "console=ttyS0 quiet panic=-1 kiln.noagent",
        first_line: "kiln-init: ready",
        mem: "256",
    };
    // systemd's banner is its first line; poweroff.target powers off once the boot is done.
    let node = Boot {
        name: "debian-node",
        img: &imgs[1],
        cmdline: "console=ttyS0 quiet panic=-1 kiln.root=/dev/vda systemd.show_status=1 \
                  systemd.unit=poweroff.target",
        first_line: "Welcome to",
        mem: "1024",
    };
    measure(&vmm, &minimal, runs, None);
    measure(&vmm, &node, runs, Some(&disks));
    let _ = std::fs::remove_dir_all(&disks);
}

fn measure(vmm: &Path, boot: &Boot<'_>, runs: usize, disks: Option<&Path>) {
    let disk = |who: &str, i: usize| disks.map(|d| d.join(format!("{who}-{i}.ext4")));
    let kiln_with = |bin: &Path, who: &str, i: usize| {
        let mut c = Command::new(bin);
        c.arg("--kernel")
            .arg(boot.img.join("vmlinuz"))
            .arg("--initrd")
            .arg(boot.img.join("initrd.img"))
            .args([
                "--cmdline",
                boot.cmdline,
                "--mem",
                boot.mem,
                "--serial",
                "stdout",
            ]);
        if let Some(d) = disk(who, i) {
            c.arg("--disk").arg(d);
        }
        c
    };
    let qemu = |i: usize| {
        let mut c = nested::qemu_microvm(boot.img, boot.cmdline);
        c.args(["-m", boot.mem]);
        if let Some(d) = disk("qemu", i) {
            c.arg("-drive")
                .arg(format!("file={},format=raw,if=none,id=root", d.display()))
                .args(["-device", "virtio-blk-device,drive=root"]);
        }
        c
    };
    let kiln = |i: usize| kiln_with(vmm, "kiln", i);
    let baseline = nested::baseline_vmm();
    let before = |i: usize| kiln_with(baseline.as_deref().unwrap_or(vmm), "base", i);
    let mut peers: Vec<(&str, &dyn Fn(usize) -> Command)> = vec![("kiln vmm", &kiln)];
    if baseline.is_some() {
        peers.push(("kiln vmm (baseline)", &before));
    }
    peers.push(("qemu microvm", &qemu));
    println!(
        "{} boot, {runs} runs each, interleaved ({}), seconds from launch",
        boot.name,
        peers.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
    );
    let mut samples = vec![(Vec::new(), Vec::new(), 0usize); peers.len()];
    for i in 0..runs {
        for ((name, make), (init, off, failed)) in peers.iter().zip(samples.iter_mut()) {
            match boot_once(make(i), boot.first_line) {
                Ok((first, o)) => {
                    init.push(first.as_secs_f64());
                    off.push(o.as_secs_f64());
                }
                Err(e) => {
                    *failed += 1;
                    println!("  {name}: run {i} failed (excluded): {e}");
                }
            }
        }
    }
    let mut rows = Vec::new();
    for ((name, _), (init, off, failed)) in peers.iter().zip(samples.iter_mut()) {
        if init.is_empty() {
            println!("  {name}: no successful run ({failed} failed)");
            continue;
        }
        let (i, o) = (Percentiles::of(init), Percentiles::of(off));
        println!("{}", i.row(&format!("{name} to first init line"), "s"));
        println!("{}", o.row(&format!("{name} to power-off"), "s"));
        if *failed > 0 {
            println!("  {name}: {failed} of {runs} runs failed and are excluded");
        }
        rows.push((*name, i, o));
    }
    let find = |n: &str| rows.iter().find(|r| r.0 == n);
    if let Some((_, qi, qo)) = find("qemu microvm") {
        for (name, ki, ko) in rows.iter().filter(|r| r.0 != "qemu microvm") {
            println!(
                "ratio {name} / qemu (p50), {}: first init line {:.2}, power-off {:.2}",
                boot.name,
                ki.p50 / qi.p50,
                ko.p50 / qo.p50
            );
        }
    }
    if let (Some((_, ki, ko)), Some((_, bi, bo))) = (find("kiln vmm"), find("kiln vmm (baseline)"))
    {
        println!(
            "ratio kiln vmm / baseline (p50), {}: first init line {:.2}, power-off {:.2}",
            boot.name,
            ki.p50 / bi.p50,
            ko.p50 / bo.p50
        );
    }
}

/// Launches a VM, returns (time to the first init line, time to exit).
fn boot_once(mut cmd: Command, first_line: &str) -> Result<(Duration, Duration), String> {
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
        if first.is_none() && line.contains(first_line) {
            first = Some(t.elapsed());
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let off = t.elapsed();
    match first {
        Some(f) if status.success() => Ok((f, off)),
        Some(_) => Err(format!("exited with {status}")),
        None => Err(format!("no '{first_line}' line; exited with {status}")),
    }
}
