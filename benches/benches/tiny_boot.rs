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

use kiln_benches::{measure, release_vmm, Percentiles};
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

/// The same code as a 32-bit PVH kernel for QEMU: an ELF note XEN_ELFNOTE_PHYS32_ENTRY points
/// at the code, which QEMU enters in 32-bit protected mode. The guest's instructions (port
/// I/O only) mean the same in 32- and 64-bit mode.
fn pvh_elf(code: &[u8]) -> Vec<u8> {
    let load = 0x10_0000u32;
    // ELF32 header (52) + 2 program headers (32 each) + note (12 + 4 name + 4 desc) + code
    let note_off = 52 + 64;
    let code_off = note_off + 20;
    let entry = load + code_off as u32;
    let mut e = Vec::new();
    e.extend_from_slice(b"\x7fELF\x01\x01\x01\0\0\0\0\0\0\0\0\0");
    for v in [2u16, 3] {
        e.extend_from_slice(&v.to_le_bytes()); // ET_EXEC, EM_386
    }
    for v in [1u32, entry, 52, 0, 0] {
        e.extend_from_slice(&v.to_le_bytes()); // version, entry, phoff, shoff, flags
    }
    for v in [52u16, 32, 2, 40, 0, 0] {
        e.extend_from_slice(&v.to_le_bytes());
    }
    let size = (code_off + code.len()) as u32;
    for v in [1u32, 0, load, load, size, size, 7, 0x1000] {
        e.extend_from_slice(&v.to_le_bytes()); // PT_LOAD
    }
    for v in [4u32, note_off as u32, 0, 0, 20, 20, 4, 4] {
        e.extend_from_slice(&v.to_le_bytes()); // PT_NOTE
    }
    for v in [4u32, 4, 18] {
        e.extend_from_slice(&v.to_le_bytes()); // namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY
    }
    e.extend_from_slice(b"Xen\0");
    e.extend_from_slice(&entry.to_le_bytes());
    e.extend_from_slice(code);
    e
}
