//! Snapshot and restore, against a cold boot of the same guest and against QEMU's migration to
//! a file and `-incoming`, all measured in the same run with interleaved rounds (one of each
//! per round, so drift hits every side alike). Failed runs are left out of the figures and
//! counted.
//!
//! Part 1, tiny guest on this host's /dev/kvm (PVM here): a guest that prints forever, with
//! 256 MiB and 4 GiB of memory. Snapshot time and size; restore to the first guest instruction
//! (the first byte it prints) in-process through `vmm::restore` and as a new `vmm --restore`
//! process; a cold boot to its first byte; QEMU (`-M microvm -accel kvm`, the same code as a
//! PVH kernel) migrating to a file and restoring with `-incoming` to its first byte.
//!
//! Part 2, `debian-minimal` (stock kernel, agent as PID 1, 256 MiB): on a host whose /dev/kvm
//! cannot boot Linux it re-runs inside the emulated KVM host. Kiln: boot to the agent
//! answering, snapshot, restore to the vCPUs running and to the agent answering. QEMU: boot to
//! the init's ready line, migrate to a file, `-incoming` to running.
//!
//! Run: `cargo bench -p kiln-benches --bench snapshot` (KILN_BENCH_RUNS, default 20;
//! KILN_BENCH_PART=tiny|debian for one part).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_benches::qemu_monitor::Monitor;
use kiln_benches::tiny::{cold_boot_to_first_byte, tiny_config};
use kiln_benches::{first_byte, ms, nested, pvh_elf, ratio, release_vmm, Series};
use vmm::config::SerialOutput;
use vmm::snapshot::SnapshotKind;
use vmm::tiny_guest::Asm;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let part = std::env::var("KILN_BENCH_PART").unwrap_or_default();
    let runs = nested::runs(20);
    let inside = std::env::var("KILN_BENCH_INSIDE").is_ok();
    if !inside && part != "debian" {
        tiny(runs);
    }
    if part != "tiny" {
        debian(runs);
    }
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-bench-snap-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Bytes `dir`'s files take on disk.
fn disk_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let files: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect()
    } else {
        vec![path.to_path_buf()]
    };
    files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

// ---------------------------------------------------------------- part 1: tiny guest

fn tiny(runs: usize) {
    let dir = scratch("tiny");
    let mut asm = Asm::new();
    asm.spin_printing(b'.');
    let kernel = dir.join("spin.elf");
    std::fs::write(&kernel, asm.clone().into_elf()).unwrap();
    let pvh = dir.join("spin-pvh.elf");
    std::fs::write(&pvh, pvh_elf(asm.code())).unwrap();
    let vmm_bin = release_vmm();
    let qemu = orchestrator::emulated_host::qemu::find_qemu().ok();
    if qemu.is_none() {
        println!("QEMU peer skipped: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
    }
    for mem in [256u32, 4096] {
        println!("\ntiny guest, {mem} MiB, {runs} interleaved rounds, on this host's /dev/kvm");
        let mut s = TinySeries::default();
        for i in 0..runs {
            let round = dir.join(format!("{mem}-{i}"));
            std::fs::create_dir_all(&round).unwrap();
            let snap = round.join("snap");
            s.snap_ms.record(
                kiln_snapshot(&kernel, mem, &snap, &mut s.snap_bytes),
                "kiln snapshot",
            );
            s.restore_in_process
                .record(kiln_restore_in_process(&snap, &round), "kiln restore");
            s.restore_process
                .record(kiln_restore_process(&vmm_bin, &snap), "kiln --restore");
            s.boot.record(
                cold_boot_to_first_byte(&kernel, mem, &round.join("cold.log")),
                "kiln boot",
            );
            if let Some(q) = &qemu {
                let file = round.join("qemu.mig");
                s.qemu_migrate.record(
                    qemu_migrate(q, &pvh, mem, &file, &round, &mut s.qemu_bytes),
                    "qemu migrate",
                );
                s.qemu_incoming
                    .record(qemu_incoming(q, &pvh, mem, &file, &round), "qemu -incoming");
            }
            let _ = std::fs::remove_dir_all(&round);
        }
        let snap = s.snap_ms.report("kiln snapshot (pause excluded)", "ms");
        s.snap_bytes.report("kiln snapshot size on disk", "KiB");
        let restore = s
            .restore_in_process
            .report("kiln restore to first instruction (in-process)", "ms");
        let restore_p = s
            .restore_process
            .report("kiln `vmm --restore` to first instruction", "ms");
        let boot = s.boot.report("kiln cold boot to first instruction", "ms");
        let mig = s.qemu_migrate.report("qemu migrate to file", "ms");
        s.qemu_bytes.report("qemu migration file size", "KiB");
        let inc = s
            .qemu_incoming
            .report("qemu -incoming to first instruction", "ms");
        ratio("kiln restore (in-process) / kiln cold boot", restore, boot);
        ratio("kiln `vmm --restore` / qemu -incoming", restore_p, inc);
        ratio("kiln snapshot / qemu migrate to file", snap, mig);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[derive(Default)]
struct TinySeries {
    snap_ms: Series,
    snap_bytes: Series,
    restore_in_process: Series,
    restore_process: Series,
    boot: Series,
    qemu_migrate: Series,
    qemu_bytes: Series,
    qemu_incoming: Series,
}

/// Boots the guest, lets it print, and times the snapshot (the VM is paused before the clock
/// starts).
fn kiln_snapshot(kernel: &Path, mem: u32, snap: &Path, bytes: &mut Series) -> Result<f64, String> {
    let log = snap.with_extension("boot.log");
    let vm = vmm::start(tiny_config(kernel, mem, SerialOutput::File(log.clone())))
        .map_err(|e| e.to_string())?;
    first_byte(&log, Instant::now(), Duration::from_secs(10))?;
    let h = vm.handle();
    h.pause();
    let t = Instant::now();
    let info = h
        .snapshot(snap, SnapshotKind::Full)
        .map_err(|e| e.to_string())?;
    let took = ms(t.elapsed());
    bytes.samples.push(info.bytes as f64 / 1024.0);
    h.shutdown();
    vm.wait();
    Ok(took)
}

fn kiln_restore_in_process(snap: &Path, round: &Path) -> Result<f64, String> {
    let log = round.join("restored.log");
    let mut rc = vmm::RestoreConfig::new(snap);
    rc.serial = Some(SerialOutput::File(log.clone()));
    let t = Instant::now();
    let vm = vmm::restore(rc).map_err(|e| e.to_string())?;
    let r = first_byte(&log, t, Duration::from_secs(10));
    vm.handle().shutdown();
    vm.wait();
    r.map(ms)
}

/// A new `vmm --restore` process, to the first byte on its stdout.
fn kiln_restore_process(vmm_bin: &Path, snap: &Path) -> Result<f64, String> {
    let t = Instant::now();
    let mut child = Command::new(vmm_bin)
        .arg("--restore")
        .arg(snap)
        .args(["--serial", "stdout", "--log-level", "error"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut byte = [0u8];
    let r = child.stdout.as_mut().unwrap().read_exact(&mut byte);
    let took = t.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    r.map_err(|e| format!("no output: {e}"))?;
    Ok(ms(took))
}

/// A QEMU microvm running `kernel` (PVH) with its serial console in `log` and an HMP monitor.
fn qemu_cmd(qemu: &Path, kernel: &Path, mem: u32, log: &Path, mon: &Path) -> Command {
    let mut c = Command::new(qemu);
    c.args(["-M", "microvm", "-accel", "kvm", "-m", &mem.to_string()])
        .args(["-display", "none", "-nodefaults", "-no-user-config"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-monitor")
        .arg(format!("unix:{},server,nowait", mon.display()))
        .arg("-kernel")
        .arg(kernel)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Boots QEMU, lets the guest print, and times `migrate` to `file` (live: the guest keeps
/// running, as Kiln's does until paused; the spinning guest dirties almost nothing).
fn qemu_migrate(
    qemu: &Path,
    kernel: &Path,
    mem: u32,
    file: &Path,
    round: &Path,
    bytes: &mut Series,
) -> Result<f64, String> {
    let (log, mon) = (round.join("qemu.log"), round.join("qemu.mon"));
    let _q = Killed(
        qemu_cmd(qemu, kernel, mem, &log, &mon)
            .spawn()
            .map_err(|e| e.to_string())?,
    );
    let mut m = Monitor::connect(&mon, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    first_byte(&log, Instant::now(), Duration::from_secs(10))?;
    let t = Instant::now();
    m.cmd(&format!("migrate \"exec:cat > {}\"", file.display()))
        .map_err(|e| e.to_string())?;
    m.wait_for(
        "info migrate",
        "Migration status: completed",
        Duration::from_secs(60),
    )
    .map_err(|e| e.to_string())?;
    let took = ms(t.elapsed());
    bytes.samples.push(disk_bytes(file) as f64 / 1024.0);
    let _ = m.cmd("quit");
    Ok(took)
}

fn qemu_incoming(
    qemu: &Path,
    kernel: &Path,
    mem: u32,
    file: &Path,
    round: &Path,
) -> Result<f64, String> {
    if !file.exists() {
        return Err("no migration file".into());
    }
    let (log, mon) = (round.join("qemu-in.log"), round.join("qemu-in.mon"));
    let t = Instant::now();
    let mut cmd = qemu_cmd(qemu, kernel, mem, &log, &mon);
    cmd.arg("-incoming")
        .arg(format!("exec:cat {}", file.display()));
    let _q = Killed(cmd.spawn().map_err(|e| e.to_string())?);
    first_byte(&log, t, Duration::from_secs(30)).map(ms)
}

// ------------------------------------------------------------- part 2: debian-minimal

fn debian(runs: usize) {
    let (vmm_bin, img) = nested::debian_minimal_here(runs);
    let dir = scratch("debian");
    println!("\ndebian-minimal, 256 MiB, {runs} interleaved rounds");
    let mut s = DebianSeries::default();
    let qemu_ok = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok();
    for i in 0..runs {
        println!("  round {}/{runs}", i + 1);
        let round = dir.join(i.to_string());
        std::fs::create_dir_all(&round).unwrap();
        let snap = round.join("snap");
        match kiln_boot_and_snapshot(&vmm_bin, &img, &round, &snap) {
            Ok((boot, snap_ms, bytes)) => {
                s.boot.samples.push(boot);
                s.snap_ms.samples.push(snap_ms);
                s.snap_bytes.samples.push(bytes);
                match kiln_restore_to_agent(&vmm_bin, &snap, &round) {
                    Ok((running, agent)) => {
                        s.restore_running.samples.push(running);
                        s.restore_agent.samples.push(agent);
                    }
                    Err(e) => {
                        s.restore_agent.failed += 1;
                        println!("  kiln restore: run failed: {e}");
                    }
                }
            }
            Err(e) => {
                s.boot.failed += 1;
                println!("  kiln boot+snapshot: run failed: {e}");
            }
        }
        if qemu_ok {
            let file = round.join("qemu.mig");
            match qemu_debian_migrate(&img, &round, &file) {
                Ok((boot, mig, bytes)) => {
                    s.qemu_boot.samples.push(boot);
                    s.qemu_migrate.samples.push(mig);
                    s.qemu_bytes.samples.push(bytes);
                    s.qemu_incoming
                        .record(qemu_debian_incoming(&img, &round, &file), "qemu -incoming");
                }
                Err(e) => {
                    s.qemu_boot.failed += 1;
                    println!("  qemu boot+migrate: run failed: {e}");
                }
            }
        }
        let _ = std::fs::remove_dir_all(&round);
    }
    let boot = s.boot.report("kiln cold boot to agent answering", "ms");
    let snap = s.snap_ms.report("kiln snapshot (pause excluded)", "ms");
    s.snap_bytes.report("kiln snapshot size on disk", "MiB");
    let running = s
        .restore_running
        .report("kiln restore to vCPUs running", "ms");
    let agent = s
        .restore_agent
        .report("kiln restore to agent answering", "ms");
    s.qemu_boot
        .report("qemu cold boot to init ready line", "ms");
    let mig = s.qemu_migrate.report("qemu migrate to file", "ms");
    s.qemu_bytes.report("qemu migration file size", "MiB");
    let inc = s.qemu_incoming.report("qemu -incoming to running", "ms");
    ratio(
        "kiln restore-to-agent / kiln boot-to-agent (target <= 0.1)",
        agent,
        boot,
    );
    ratio(
        "kiln restore-to-running / qemu -incoming-to-running",
        running,
        inc,
    );
    ratio("kiln snapshot / qemu migrate to file", snap, mig);
    let _ = std::fs::remove_dir_all(&dir);
}

#[derive(Default)]
struct DebianSeries {
    boot: Series,
    snap_ms: Series,
    snap_bytes: Series,
    restore_running: Series,
    restore_agent: Series,
    qemu_boot: Series,
    qemu_migrate: Series,
    qemu_bytes: Series,
    qemu_incoming: Series,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Connects to the agent and runs `true`; the time since `t`.
fn agent_answers(uds: &Path, t: Instant, timeout: Duration) -> Result<f64, String> {
    runtime().block_on(async {
        loop {
            let attempt = agent::Client::connect_vsock_uds(uds, 10700);
            if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(3), attempt).await {
                let run = c.exec_buffered(agent::ExecRequest::shell("true"));
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(30), run).await {
                    return Ok(ms(t.elapsed()));
                }
            }
            if t.elapsed() > timeout {
                return Err("agent did not answer".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

fn api(sock: &Path, req: &str) -> Result<String, String> {
    use std::io::Write;
    let mut c = std::os::unix::net::UnixStream::connect(sock).map_err(|e| e.to_string())?;
    writeln!(c, "{req}").map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(c)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if line.contains("\"ok\":true") {
        Ok(line)
    } else {
        Err(line)
    }
}

fn kiln_boot_and_snapshot(
    vmm_bin: &Path,
    img: &Path,
    round: &Path,
    snap: &Path,
) -> Result<(f64, f64, f64), String> {
    let (uds, sock) = (round.join("boot.vsock"), round.join("boot.api"));
    let t = Instant::now();
    let _vm = Killed(
        Command::new(vmm_bin)
            .arg("--kernel")
            .arg(img.join("vmlinuz"))
            .arg("--initrd")
            .arg(img.join("initrd.img"))
            .args(["--cmdline", "console=ttyS0 quiet panic=-1", "--mem", "256"])
            .arg("--vsock")
            .arg(format!("cid=3,uds={}", uds.display()))
            .arg("--api-sock")
            .arg(&sock)
            .args(["--serial", "off"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?,
    );
    let boot = agent_answers(&uds, t, Duration::from_secs(180))?;
    api(&sock, r#"{"op":"pause"}"#)?;
    let t = Instant::now();
    api(
        &sock,
        &format!(r#"{{"op":"snapshot","dir":"{}"}}"#, snap.display()),
    )?;
    let snap_ms = ms(t.elapsed());
    Ok((boot, snap_ms, disk_bytes(snap) as f64 / (1 << 20) as f64))
}

/// `vmm --restore`: to the "VM restored" log line (vCPU threads start right after), and to
/// the agent answering over the new vsock socket.
fn kiln_restore_to_agent(vmm_bin: &Path, snap: &Path, round: &Path) -> Result<(f64, f64), String> {
    let uds = round.join("restored.vsock");
    let t = Instant::now();
    let mut child = Killed(
        Command::new(vmm_bin)
            .arg("--restore")
            .arg(snap)
            .arg("--vsock")
            .arg(format!("cid=3,uds={}", uds.display()))
            .arg("--api-sock")
            .arg(round.join("restored.api"))
            .args(["--serial", "off", "--log-level", "info"])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?,
    );
    let stderr = child.0.stderr.take().unwrap();
    let mut running = None;
    for line in BufReader::new(stderr).lines() {
        let line = line.map_err(|e| e.to_string())?;
        if line.contains("VM restored") {
            running = Some(ms(t.elapsed()));
            break;
        }
        if t.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    let running = running.ok_or("no 'VM restored' line")?;
    let agent = agent_answers(&uds, t, Duration::from_secs(120))?;
    Ok((running, agent))
}

/// QEMU microvm with the same kernel and initramfs (no agent: QEMU's microvm here has no
/// vsock; the init reports ready and waits in a shell), console in `log`, HMP on `mon`.
fn qemu_debian(img: &Path, log: &Path, mon: &Path) -> Command {
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
    .arg("-serial")
    .arg(format!("file:{}", log.display()))
    .arg("-monitor")
    .arg(format!("unix:{},server,nowait", mon.display()))
    .arg("-kernel")
    .arg(img.join("vmlinuz"))
    .arg("-initrd")
    .arg(img.join("initrd.img"))
    .args([
        "-append",
        "console=ttyS0 quiet panic=-1 kiln.noagent kiln.shell",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    c
}

/// QEMU boots the same kernel and initramfs to the init's ready line, then migrates to `file`.
fn qemu_debian_migrate(img: &Path, round: &Path, file: &Path) -> Result<(f64, f64, f64), String> {
    let (log, mon) = (round.join("qemu.log"), round.join("qemu.mon"));
    let t = Instant::now();
    let _q = Killed(
        qemu_debian(img, &log, &mon)
            .spawn()
            .map_err(|e| e.to_string())?,
    );
    let mut m = Monitor::connect(&mon, Duration::from_secs(30)).map_err(|e| e.to_string())?;
    loop {
        if std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("kiln-init: ready")
        {
            break;
        }
        if t.elapsed() > Duration::from_secs(180) {
            return Err("no 'kiln-init: ready' line".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let boot = ms(t.elapsed());
    let t = Instant::now();
    m.cmd(&format!("migrate \"exec:cat > {}\"", file.display()))
        .map_err(|e| e.to_string())?;
    m.wait_for(
        "info migrate",
        "Migration status: completed",
        Duration::from_secs(300),
    )
    .map_err(|e| e.to_string())?;
    let mig = ms(t.elapsed());
    let _ = m.cmd("quit");
    Ok((boot, mig, disk_bytes(file) as f64 / (1 << 20) as f64))
}

fn qemu_debian_incoming(img: &Path, round: &Path, file: &Path) -> Result<f64, String> {
    let (log, mon) = (round.join("qemu-in.log"), round.join("qemu-in.mon"));
    let t = Instant::now();
    let mut cmd = qemu_debian(img, &log, &mon);
    cmd.arg("-incoming")
        .arg(format!("exec:cat {}", file.display()));
    let _q = Killed(cmd.spawn().map_err(|e| e.to_string())?);
    let mut m = Monitor::connect(&mon, Duration::from_secs(30)).map_err(|e| e.to_string())?;
    m.wait_for(
        "info status",
        "VM status: running",
        Duration::from_secs(120),
    )
    .map_err(|e| e.to_string())?;
    Ok(ms(t.elapsed()))
}
