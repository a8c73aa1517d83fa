//! A tiny guest (prints a line to COM1, then resets through the i8042) under `vmm` on this
//! host's /dev/kvm, next to peers measured in the same run. Per peer: time from launch to the
//! first guest instruction (the first byte on its serial console: the guest's first
//! instructions write it), time from launch to exit, and peak RSS. Peers:
//! - `vmm --mem 256`, and `vmm --mem 4096` (guest memory must be mapped, not touched: RSS must
//!   not grow with guest size);
//! - with `KILN_BENCH_VMM_BASELINE=/path/to/an/older/vmm`, that binary with the same two sizes,
//!   for before/after figures in one run;
//! - QEMU (`-M microvm -accel kvm -m 256`) booting the same code as a PVH kernel, when
//!   installed. Its microvm machine has no i8042, so that guest ends through `isa-debug-exit`
//!   instead (QEMU then exits with status 1);
//! - `vmm::start` in this process to the first guest instruction (`--mem 256`), as the snapshot
//!   bench measures a cold boot: the VMM's own start-up without exec and dynamic loading.
//!
//! Peers take turns run by run (A B C A B C ...), after one warm-up round that is not counted;
//! a failed run (wrong exit status, no serial output, timeout) is left out of every figure of
//! its peer and counted. The serial log is a file polled without sleeping (as in the snapshot
//! bench), so each run has one core busy watching it. Ratios are against QEMU measured in the
//! same run. Target: Kiln's vmm start to first guest instruction <= 5 ms.
//!
//! Run: `cargo bench -p kiln-benches --bench tiny_boot` (KILN_BENCH_RUNS, default 50).
//! Figures: the Benchmarks section of the top-level README.md.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kiln_benches::tiny::cold_boot_to_first_byte;
use kiln_benches::{measure_first_output, ms, nested, pvh_elf, ratio, release_vmm, Series};
use vmm::tiny_guest::Asm;

const QEMU: &str = "qemu microvm -m 256";
const TARGET_MS: f64 = 5.0;

/// One process peer: how to launch it (given its serial log path), the exit status of a good
/// run, and its figures.
struct Peer {
    name: String,
    launch: Box<dyn Fn(&Path) -> Command>,
    ok_code: i32,
    first: Series,
    exit: Series,
    rss: Series,
}

impl Peer {
    fn new(name: &str, ok_code: i32, launch: impl Fn(&Path) -> Command + 'static) -> Self {
        Peer {
            name: name.to_string(),
            launch: Box::new(launch),
            ok_code,
            first: Series::default(),
            exit: Series::default(),
            rss: Series::default(),
        }
    }

    /// One run; its figures are kept only if `keep` and the run succeeded.
    fn run(&mut self, log: &Path, keep: bool) {
        let _ = std::fs::remove_file(log);
        let r = measure_first_output(&mut (self.launch)(log), log, Duration::from_secs(20))
            .map_err(|e| format!("launch: {e}"))
            .and_then(|(run, first)| match (run.code, first) {
                (Some(c), Ok(first)) if c == self.ok_code => Ok((run, first)),
                (code, Ok(_)) => Err(format!("exit status {code:?}, not {}", self.ok_code)),
                (_, Err(e)) => Err(e),
            });
        if !keep {
            return;
        }
        match r {
            Ok((run, first)) => {
                self.first.samples.push(ms(first));
                self.exit.samples.push(ms(run.wall));
                self.rss.samples.push(run.max_rss_kib as f64 / 1024.0);
            }
            Err(e) => {
                for s in [&mut self.first, &mut self.exit, &mut self.rss] {
                    s.failed += 1;
                }
                println!("  {}: run failed (excluded): {e}", self.name);
            }
        }
    }
}

fn kiln(name: &str, bin: &Path, kernel: &Path, mem: &'static str) -> Peer {
    let (bin, kernel) = (bin.to_path_buf(), kernel.to_path_buf());
    Peer::new(name, 0, move |log| {
        let mut c = Command::new(&bin);
        c.arg("--kernel")
            .arg(&kernel)
            .args(["--mem", mem, "--serial"])
            .arg(log);
        c
    })
}

fn qemu(bin: PathBuf, pvh: PathBuf) -> Peer {
    Peer::new(QEMU, 1, move |log| {
        let mut c = Command::new(&bin);
        c.args(["-M", "microvm", "-accel", "kvm", "-m", "256"])
            .args(["-display", "none", "-no-reboot", "-nodefaults"])
            .arg("-serial")
            .arg(format!("file:{}", log.display()))
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel"])
            .arg(&pvh);
        c
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks benches to list themselves; nothing to list.
    }
    let runs = nested::runs(50);
    let dir = std::env::temp_dir().join(format!("kiln-bench-tiny-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut asm = Asm::new();
    asm.print("tiny guest up\n").i8042_reset();
    let kernel = dir.join("tiny.elf");
    std::fs::write(&kernel, asm.clone().into_elf()).unwrap();
    let vmm = release_vmm();

    let mut peers = vec![
        kiln("kiln vmm --mem 256", &vmm, &kernel, "256"),
        kiln("kiln vmm --mem 4096", &vmm, &kernel, "4096"),
    ];
    if let Some(base) = nested::baseline_vmm() {
        peers.push(kiln("baseline vmm --mem 256", &base, &kernel, "256"));
        peers.push(kiln("baseline vmm --mem 4096", &base, &kernel, "4096"));
    }
    match orchestrator::emulated_host::qemu::find_qemu() {
        Ok(bin) => {
            let pvh = dir.join("tiny-pvh.elf");
            let mut peer = Asm::new();
            peer.print("tiny guest up\n").mov_al(0).bytes(&[0xe6, 0xf4]); // out 0xf4, al
            std::fs::write(&pvh, pvh_elf(peer.code())).unwrap();
            peers.push(qemu(bin, pvh));
        }
        Err(_) => println!(
            "QEMU peer skipped: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
        ),
    }
    let in_process = "kiln vmm::start --mem 256 (in-process)";
    println!(
        "tiny guest on this host's /dev/kvm: {runs} interleaved rounds of {}, {in_process} \
         (one warm-up round not counted)",
        peers
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut start = Series::default();
    for round in 0..=runs {
        let keep = round > 0;
        for (i, p) in peers.iter_mut().enumerate() {
            p.run(&dir.join(format!("{i}.log")), keep);
        }
        let log = dir.join("in-process.log");
        let _ = std::fs::remove_file(&log);
        let r = cold_boot_to_first_byte(&kernel, 256, &log);
        if keep {
            start.record(r, in_process);
        }
    }

    println!("\nlaunch to first guest instruction (first serial byte)");
    let first: Vec<_> = peers
        .iter()
        .map(|p| p.first.report(&p.name, "ms"))
        .collect();
    let start_p = start.report(in_process, "ms");
    println!("\nlaunch to exit");
    let exit: Vec<_> = peers.iter().map(|p| p.exit.report(&p.name, "ms")).collect();
    println!("\npeak RSS");
    let rss: Vec<_> = peers.iter().map(|p| p.rss.report(&p.name, "MiB")).collect();

    let at = |name: &str| peers.iter().position(|p| p.name == name);
    if let Some(q) = at(QEMU) {
        println!("\nratios against {QEMU}, same run");
        for (i, p) in peers.iter().enumerate().filter(|(i, _)| *i != q) {
            ratio(
                &format!("{} / qemu, first instruction", p.name),
                first[i],
                first[q],
            );
            ratio(&format!("{} / qemu, exit", p.name), exit[i], exit[q]);
            ratio(&format!("{} / qemu, peak RSS", p.name), rss[i], rss[q]);
        }
        ratio(
            &format!("{in_process} / qemu, first instruction"),
            start_p,
            first[q],
        );
    }
    println!("\nratios between Kiln peers");
    for mem in ["256", "4096"] {
        let (Some(k), Some(b)) = (
            at(&format!("kiln vmm --mem {mem}")),
            at(&format!("baseline vmm --mem {mem}")),
        ) else {
            continue;
        };
        ratio(
            &format!("kiln / baseline --mem {mem}, first instruction"),
            first[k],
            first[b],
        );
        ratio(
            &format!("kiln / baseline --mem {mem}, exit"),
            exit[k],
            exit[b],
        );
        ratio(
            &format!("kiln / baseline --mem {mem}, peak RSS"),
            rss[k],
            rss[b],
        );
    }
    ratio("kiln --mem 4096 / --mem 256, peak RSS", rss[1], rss[0]);

    println!("\ntarget: Kiln's vmm start to first guest instruction <= {TARGET_MS} ms");
    for (name, p) in [(peers[0].name.as_str(), first[0]), (in_process, start_p)] {
        match p {
            Some(p) => println!(
                "  {name}: p50 {:.2} ms, p99 {:.2} ms: {}",
                p.p50,
                p.p99,
                match (p.p50 <= TARGET_MS, p.p99 <= TARGET_MS) {
                    (true, true) => "met at p50 and p99",
                    (true, false) => "met at p50, not at p99",
                    _ => "NOT met",
                }
            ),
            None => println!("  {name}: no successful run"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
