//! Boot-to-exit time and peak RSS of `vmm` for a tiny guest (prints a line, resets through the
//! i8042) with `--mem 256`, next to peers measured in the same run:
//! - the same `vmm` with `--mem 4096` (guest memory must be mapped, not touched: RSS must not
//!   grow with guest size);
//! - QEMU (`-M microvm -accel kvm`) booting the same code as a PVH kernel, when installed. Its
//!   microvm machine has no i8042, so that guest ends through `isa-debug-exit` instead (QEMU
//!   then exits with status 1).
//!
//! Run: `cargo bench -p kiln-benches --bench tiny_boot` (KILN_BENCH_RUNS sets the sample size).

use std::process::Command;
use std::time::Duration;

use kiln_benches::{measure, pvh_elf, release_vmm, Percentiles};
use vmm::tiny_guest::Asm;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks benches to list themselves; nothing to list.
    }
    let runs: usize = std::env::var("KILN_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let dir = std::env::temp_dir().join(format!("kiln-bench-tiny-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut asm = Asm::new();
    asm.print("tiny guest up\n").i8042_reset();
    let kernel = dir.join("tiny.elf");
    std::fs::write(&kernel, asm.clone().into_elf()).unwrap();
    let vmm = release_vmm();

    println!("tiny guest: {runs} runs each (wall time ms, peak RSS MiB)");
    let mut results = Vec::new();
    for mem in ["256", "4096"] {
        let name = format!("kiln vmm --mem {mem}");
        let r = sample(runs, 0, || {
            let mut c = Command::new(&vmm);
            c.args([
                "--kernel",
                kernel.to_str().unwrap(),
                "--mem",
                mem,
                "--serial",
                "off",
            ]);
            c
        });
        results.push((name, r));
    }
    match orchestrator::emulated_host::qemu::find_qemu() {
        Ok(qemu) => {
            let pvh = dir.join("tiny-pvh.elf");
            let mut peer = Asm::new();
            peer.print("tiny guest up\n").mov_al(0).bytes(&[0xe6, 0xf4]); // out 0xf4, al
            std::fs::write(&pvh, pvh_elf(peer.code())).unwrap();
            let r = sample(runs, 1, || {
                let mut c = Command::new(&qemu);
                c.args(["-M", "microvm", "-accel", "kvm", "-m", "256"])
                    .args([
                        "-display",
                        "none",
                        "-serial",
                        "null",
                        "-no-reboot",
                        "-nodefaults",
                    ])
                    .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel"])
                    .arg(&pvh);
                c
            });
            results.push(("qemu microvm -m 256".into(), r));
        }
        Err(_) => println!(
            "peer skipped: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
        ),
    }
    for (name, (mut wall, mut rss, ok)) in results.iter().cloned() {
        println!(
            "{}",
            Percentiles::of(&mut wall).row(&format!("{name} wall"), "ms")
        );
        println!(
            "{}",
            Percentiles::of(&mut rss).row(&format!("{name} peak RSS"), "MiB")
        );
        if ok < runs {
            println!("  ({} of {runs} runs failed)", runs - ok);
        }
    }
    if results.len() > 1 {
        let base = median(&results[0].1 .1);
        for (name, (_, rss, _)) in &results[1..] {
            println!(
                "ratio peak RSS median: kiln --mem 256 / {name} = {:.2}",
                base / median(rss)
            );
        }
        let base = median(&results[0].1 .0);
        for (name, (wall, _, _)) in &results[1..] {
            println!(
                "ratio wall median:     kiln --mem 256 / {name} = {:.2}",
                base / median(wall)
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

type Sample = (Vec<f64>, Vec<f64>, usize);

/// Runs `cmd` `runs` times; a run counts as good when it exits with `ok_code`.
fn sample(runs: usize, ok_code: i32, mut cmd: impl FnMut() -> Command) -> Sample {
    let (mut wall, mut rss, mut ok) = (Vec::new(), Vec::new(), 0);
    for _ in 0..runs {
        let r = measure(&mut cmd(), Duration::from_secs(20)).expect("spawn");
        wall.push(r.wall.as_secs_f64() * 1000.0);
        rss.push(r.max_rss_kib as f64 / 1024.0);
        ok += usize::from(r.code == Some(ok_code));
    }
    (wall, rss, ok)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    Percentiles::of(&mut v).p50
}
