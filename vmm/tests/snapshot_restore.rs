//! Snapshot and restore on /dev/kvm with a hand-made guest that counts: a register (RSI) and
//! a memory word go up together, and each value is printed on the serial console. A restored
//! guest must print the very next number, with the register and memory still equal. Runs on
//! PVM hosts (these CI machines) and on hardware KVM alike.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use vmm::tiny_guest::Asm;

/// Where the guest keeps its memory counter.
const COUNTER: u32 = 0x30_0000;

/// The i8042's configuration byte after reset, which the guest reads back again and again.
const I8042_CTR: u8 = 0x65;
/// Port reads per counted number.
const READS_PER_NUMBER: usize = 16;

/// The counting guest: forever { rsi += 1; [COUNTER] += 1; if [COUNTER] != rsi: print
/// MISMATCH and stop; print rsi as 8 hex digits and a newline }. Before each number it also
/// asks the i8042 for its configuration byte and reads it from the data port, 16 times: each
/// read pops the byte, so a read the VMM cut in half (and the restored guest repeated) finds
/// the queue empty and the guest prints LOST-IO and stops.
fn counting_guest() -> Asm {
    let c = COUNTER.to_le_bytes();
    let mut top = Asm::new();
    let mut lost_at = Vec::new();
    for _ in 0..READS_PER_NUMBER {
        top.bytes(&[0xb0, 0x20, 0xe6, 0x64]) // mov al, 0x20; out 0x64, al (read CTR)
            .bytes(&[0xe4, 0x60, 0x3c, I8042_CTR]) // in al, 0x60; cmp al, CTR
            .bytes(&[0x0f, 0x85, 0, 0, 0, 0]); // jne lost (patched below)
        lost_at.push(top.code().len());
    }
    top.bytes(&[0x48, 0xff, 0xc6]) // inc rsi
        .bytes(&[0x48, 0xff, 0x04, 0x25])
        .bytes(&c) // inc qword [COUNTER]
        .bytes(&[0x48, 0x8b, 0x04, 0x25])
        .bytes(&c) // mov rax, [COUNTER]
        .bytes(&[0x48, 0x39, 0xf0]); // cmp rax, rsi
    let mut body = Asm::new();
    body.bytes(&[0x89, 0xf0]).print_eax_hex().print("\n"); // mov eax, esi
    let loop_len = top.code().len() + 6 + body.code().len() + 5;
    let mut mismatch = Asm::new();
    mismatch.print("MISMATCH\n").halt_forever();
    // `lost` follows the mismatch report; patch every `jne lost` to reach it.
    let lost = loop_len + mismatch.code().len();
    let mut code = top.code().to_vec();
    for end in lost_at {
        code[end - 4..end].copy_from_slice(&((lost - end) as i32).to_le_bytes());
    }
    let mut a = Asm::new();
    a.bytes(&[0x31, 0xf6]) // xor esi, esi (the boot protocol points RSI at the zero page)
        .bytes(&code)
        .bytes(&[0x0f, 0x85]) // jne mismatch
        .bytes(&((body.code().len() + 5) as i32).to_le_bytes())
        .bytes(body.code())
        .bytes(&[0xe9]) // jmp top
        .bytes(&(-(loop_len as i32)).to_le_bytes())
        .bytes(mismatch.code())
        .print("LOST-IO\n")
        .halt_forever();
    a
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("kiln-snap-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `vmm` process, killed on drop.
struct VmmProcess(Child);

impl Drop for VmmProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn vmm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmm"));
    c.stdin(Stdio::null()).stdout(Stdio::null());
    c
}

fn spawn(cmd: &mut Command, api: &Path) -> VmmProcess {
    let mut p = VmmProcess(cmd.stderr(Stdio::inherit()).spawn().unwrap());
    let t = Instant::now();
    while !api.exists() {
        if let Ok(Some(st)) = p.0.try_wait() {
            panic!("vmm exited ({st}) before its API socket appeared");
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "API socket never appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    p
}

fn api(sock: &Path, req: &str) -> serde_json::Value {
    let mut c = UnixStream::connect(sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    writeln!(c, "{req}").unwrap();
    let mut line = String::new();
    BufReader::new(c).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply {line:?}: {e}"))
}

fn read(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into()
}

/// Complete lines of the console.
fn lines(text: &str) -> usize {
    text.matches('\n').count()
}

/// Waits until the console at `path` has at least `n` lines.
fn wait_lines(path: &Path, n: usize) {
    let t = Instant::now();
    while lines(&read(path)) < n {
        let text = read(path);
        if text.contains("LOST-IO") || text.contains("MISMATCH") {
            check_sequence(&text, 1);
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "guest printed only {} lines: {:?}",
            lines(&read(path)),
            read(path)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Checks that `text` counts 1, 2, 3, ... without gap, repeat or mismatch; returns the last
/// complete number.
fn check_sequence(text: &str, first: u32) -> u32 {
    assert!(!text.contains("MISMATCH"), "register and memory disagree");
    assert!(
        !text.contains("LOST-IO"),
        "a port read was repeated after restore: an I/O exit was cut in half"
    );
    let mut expect = first;
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    for line in complete.lines() {
        let n = u32::from_str_radix(line, 16)
            .unwrap_or_else(|_| panic!("not a number: {line:?} (expected {expect:08x})"));
        assert_eq!(n, expect, "sequence broken at {line}");
        expect += 1;
    }
    expect - 1
}

/// Boots the counting guest, lets it count, pauses and snapshots it into `snap`, then kills
/// the process. Returns the console so far.
fn boot_count_snapshot(s: &Scratch, snap: &Path, mem: &str) -> String {
    let kernel = s.path("count.elf");
    std::fs::write(&kernel, counting_guest().into_elf()).unwrap();
    let (serial, sock) = (s.path("boot.log"), s.path("boot.sock"));
    let mut p = spawn(
        vmm()
            .arg("--kernel")
            .arg(&kernel)
            .args(["--mem", mem, "--serial"])
            .arg(&serial)
            .arg("--api-sock")
            .arg(&sock),
        &sock,
    );
    wait_lines(&serial, 30);
    assert_eq!(api(&sock, r#"{"op":"pause"}"#)["ok"], true);
    let reply = api(
        &sock,
        &format!(r#"{{"op":"snapshot","dir":"{}"}}"#, snap.display()),
    );
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["snapshot"]["dir"], snap.display().to_string());
    assert!(reply["snapshot"]["bytes"].as_u64().unwrap() > 0);
    p.0.kill().unwrap();
    p.0.wait().unwrap();
    read(&serial)
}

fn restore_cmd(snap: &Path, serial: &Path, sock: &Path) -> Command {
    let mut c = vmm();
    c.arg("--restore")
        .arg(snap)
        .arg("--serial")
        .arg(serial)
        .arg("--api-sock")
        .arg(sock);
    c
}

#[test]
fn restored_guest_counts_on_with_the_very_next_number() {
    let s = Scratch::new("next");
    let snap = s.path("snap");
    let before = boot_count_snapshot(&s, &snap, "256");
    let last = check_sequence(&before, 1);
    assert!(last >= 30);

    let (serial, sock) = (s.path("restored.log"), s.path("restored.sock"));
    let _p = spawn(&mut restore_cmd(&snap, &serial, &sock), &sock);
    wait_lines(&serial, 30);
    // The console goes on where it stopped (perhaps mid-line): together they count 1, 2, ...
    let all = before + &read(&serial);
    let now = check_sequence(&all, 1);
    assert!(now >= last + 29, "{now} after {last}");
    assert_eq!(
        api(&sock, r#"{"op":"status"}"#)["status"]["state"],
        "running"
    );
    assert_eq!(api(&sock, r#"{"op":"shutdown"}"#)["ok"], true);
}

#[test]
fn two_restores_of_one_snapshot_count_independently_and_leave_it_unchanged() {
    let s = Scratch::new("forks");
    let snap = s.path("snap");
    let before = boot_count_snapshot(&s, &snap, "256");
    let memory_before = std::fs::read(snap.join("memory")).unwrap();
    let state_before = std::fs::read(snap.join("state")).unwrap();

    let forks: Vec<(PathBuf, PathBuf)> = (0..2)
        .map(|i| {
            (
                s.path(&format!("fork{i}.log")),
                s.path(&format!("fork{i}.sock")),
            )
        })
        .collect();
    let procs: Vec<VmmProcess> = forks
        .iter()
        .map(|(serial, sock)| spawn(&mut restore_cmd(&snap, serial, sock), sock))
        .collect();
    for (serial, _) in &forks {
        wait_lines(serial, 40);
    }
    // Both run at once, each with its own memory: each goes on from the snapshot.
    for (serial, sock) in &forks {
        assert_eq!(
            api(sock, r#"{"op":"status"}"#)["status"]["state"],
            "running"
        );
        check_sequence(&(before.clone() + &read(serial)), 1);
    }
    for (_, sock) in &forks {
        assert_eq!(api(sock, r#"{"op":"shutdown"}"#)["ok"], true);
    }
    drop(procs);
    assert!(
        std::fs::read(snap.join("memory")).unwrap() == memory_before,
        "a restore wrote into the snapshot's memory file"
    );
    assert_eq!(std::fs::read(snap.join("state")).unwrap(), state_before);
}

#[test]
fn paused_restore_waits_for_resume() {
    let s = Scratch::new("paused");
    let snap = s.path("snap");
    let before = boot_count_snapshot(&s, &snap, "64");
    let (serial, sock) = (s.path("r.log"), s.path("r.sock"));
    let _p = spawn(restore_cmd(&snap, &serial, &sock).arg("--paused"), &sock);
    assert_eq!(
        api(&sock, r#"{"op":"status"}"#)["status"]["state"],
        "paused"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(read(&serial), "", "a paused restore ran guest code");
    assert_eq!(api(&sock, r#"{"op":"resume"}"#)["ok"], true);
    wait_lines(&serial, 10);
    check_sequence(&(before + &read(&serial)), 1);
}

#[test]
fn diff_snapshot_holds_only_new_pages_and_restores_its_chain() {
    let s = Scratch::new("diff");
    let kernel = s.path("count.elf");
    std::fs::write(&kernel, counting_guest().into_elf()).unwrap();
    let (serial, sock) = (s.path("boot.log"), s.path("boot.sock"));
    let (full, diff) = (s.path("full"), s.path("diff"));
    let mut p = spawn(
        vmm()
            .arg("--kernel")
            .arg(&kernel)
            .arg("--serial")
            .arg(&serial)
            .arg("--api-sock")
            .arg(&sock),
        &sock,
    );
    wait_lines(&serial, 10);
    api(&sock, r#"{"op":"pause"}"#);
    let r = api(
        &sock,
        &format!(r#"{{"op":"snapshot","dir":"{}"}}"#, full.display()),
    );
    assert_eq!(r["ok"], true, "{r}");
    let full_bytes = r["snapshot"]["bytes"].as_u64().unwrap();
    api(&sock, r#"{"op":"resume"}"#);
    let n = lines(&read(&serial));
    wait_lines(&serial, n + 30);
    api(&sock, r#"{"op":"pause"}"#);
    // A diff against anything but the last snapshot is refused.
    let r = api(
        &sock,
        &format!(
            r#"{{"op":"snapshot","dir":"{}","kind":"diff"}}"#,
            diff.display()
        ),
    );
    assert_eq!(r["ok"], false);
    let r = api(
        &sock,
        &format!(
            r#"{{"op":"snapshot","dir":"{}","kind":"diff","parent":"{}"}}"#,
            diff.display(),
            full.display()
        ),
    );
    assert_eq!(r["ok"], true, "{r}");
    let diff_bytes = r["snapshot"]["bytes"].as_u64().unwrap();
    assert!(
        diff_bytes < full_bytes,
        "diff {diff_bytes} bytes, full {full_bytes}"
    );
    p.0.kill().unwrap();
    p.0.wait().unwrap();
    let before = read(&serial);
    let last = check_sequence(&before, 1);

    let (serial2, sock2) = (s.path("r.log"), s.path("r.sock"));
    let _r = spawn(&mut restore_cmd(&diff, &serial2, &sock2), &sock2);
    wait_lines(&serial2, 10);
    let now = check_sequence(&(before + &read(&serial2)), 1);
    assert!(now > last);
}

#[test]
fn snapshot_refuses_a_running_vm_and_an_existing_path() {
    let s = Scratch::new("refuse");
    let kernel = s.path("count.elf");
    std::fs::write(&kernel, counting_guest().into_elf()).unwrap();
    let sock = s.path("api.sock");
    let _p = spawn(
        vmm()
            .arg("--kernel")
            .arg(&kernel)
            .args(["--serial", "off", "--api-sock"])
            .arg(&sock),
        &sock,
    );
    let dir = s.path("snap");
    let req = format!(r#"{{"op":"snapshot","dir":"{}"}}"#, dir.display());
    let r = api(&sock, &req);
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().contains("pause first"), "{r}");
    assert!(!dir.exists());
    api(&sock, r#"{"op":"pause"}"#);
    std::fs::create_dir(&dir).unwrap();
    let r = api(&sock, &req);
    assert!(
        r["error"].as_str().unwrap().contains("already exists"),
        "{r}"
    );
    std::fs::remove_dir(&dir).unwrap();
    // What a snapshot that died half-way leaves behind is cleared by the next one.
    let stale = s.path(".snap.partial");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("memory"), b"half written").unwrap();
    assert_eq!(api(&sock, &req)["ok"], true);
    let leftovers: Vec<_> = std::fs::read_dir(&s.0)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "temporary directory left behind");
}

fn restore_fails(snap: &Path, s: &Scratch, needle: &str) {
    let out: Output = vmm()
        .arg("--restore")
        .arg(snap)
        .arg("--serial")
        .arg(s.path("never.log"))
        .arg("--api-sock")
        .arg(s.path("never.sock"))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "restore of a bad snapshot succeeded");
    assert!(out.status.code().is_some(), "vmm crashed: {}", out.status);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "want one line: {stderr}");
    assert!(lines[0].contains(needle), "{needle:?} not in {stderr}");
    assert!(!s.path("never.log").exists(), "the guest ran");
}

fn copy_snapshot(from: &Path, to: &Path) {
    std::fs::create_dir(to).unwrap();
    for f in ["state", "memory"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

#[test]
fn damaged_or_foreign_snapshots_get_one_clear_line() {
    use vmm::snapshot::format;
    let s = Scratch::new("damaged");
    let snap = s.path("snap");
    boot_count_snapshot(&s, &snap, "64");
    let state = std::fs::read(snap.join("state")).unwrap();

    let variant = |name: &str, edit: &dyn Fn(&Path)| {
        let dir = s.path(name);
        copy_snapshot(&snap, &dir);
        edit(&dir);
        dir
    };
    let flipped = variant("flipped", &|d| {
        let mut b = state.clone();
        let i = b.len() - 100;
        b[i] ^= 0x40;
        std::fs::write(d.join("state"), b).unwrap();
    });
    restore_fails(&flipped, &s, "damaged (checksum mismatch)");
    let truncated = variant("truncated", &|d| {
        std::fs::write(d.join("state"), &state[..state.len() / 2]).unwrap();
    });
    restore_fails(&truncated, &s, "truncated");
    let version = variant("version", &|d| {
        let mut b = state.clone();
        b[8..12].copy_from_slice(&99u32.to_le_bytes());
        std::fs::write(d.join("state"), b).unwrap();
    });
    restore_fails(&version, &s, "format version 99");
    let garbage = variant("garbage", &|d| {
        std::fs::write(d.join("state"), b"#!/bin/sh\necho not a snapshot\n").unwrap();
    });
    restore_fails(&garbage, &s, "not a Kiln snapshot");
    let foreign = variant("foreign", &|d| {
        // A well-formed snapshot from another CPU model: the header names other features.
        let v = format::verify(&state).unwrap();
        let mut header = v.header.clone();
        header.cpu.digest[0] ^= 1;
        header.cpu.description = "SomeOtherVendor family 99 model 1".into();
        let (bytes, _) = format::assemble(
            format::FORMAT_VERSION,
            &postcard::to_allocvec(&header).unwrap(),
            v.state_bytes(),
        );
        std::fs::write(d.join("state"), bytes).unwrap();
    });
    restore_fails(&foreign, &s, "another CPU model (SomeOtherVendor");
    let short_memory = variant("short-memory", &|d| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(d.join("memory"))
            .unwrap();
        f.set_len(1 << 20).unwrap();
    });
    restore_fails(&short_memory, &s, "memory file is 1048576 bytes");
    restore_fails(&s.path("nonexistent"), &s, "is not a directory");
}

/// Many pause-snapshot-restore cycles through the embedding API, in this process: however the
/// pause lands (often right after a port read exit), the restored guest never repeats or
/// loses an access, and its count goes on.
#[test]
fn pause_and_snapshot_never_cut_an_io_exit_in_half() {
    use vmm::snapshot::SnapshotKind;
    let s = Scratch::new("io-cut");
    let kernel = s.path("count.elf");
    std::fs::write(&kernel, counting_guest().into_elf()).unwrap();
    let mut cfg = vmm::VmConfig::new(&kernel);
    cfg.mem_mib = 64;
    cfg.serial = vmm::config::SerialOutput::File(s.path("0.log"));
    let mut vm = vmm::start(cfg).unwrap();
    let mut console = String::new();
    for round in 0..20 {
        let log = s.path(&format!("{round}.log"));
        wait_lines(&log, 2);
        let handle = vm.handle();
        handle.pause();
        let snap = s.path(&format!("snap{round}"));
        let info = handle.snapshot(&snap, SnapshotKind::Full).unwrap();
        assert_eq!(info.dir, snap);
        handle.shutdown();
        assert_eq!(
            vm.wait_timeout(Duration::from_secs(30)),
            Some(vmm::ExitReason::Shutdown)
        );
        console += &read(&log);
        check_sequence(&console, 1);
        let mut rc = vmm::RestoreConfig::new(&snap);
        rc.serial = Some(vmm::config::SerialOutput::File(
            s.path(&format!("{}.log", round + 1)),
        ));
        vm = vmm::restore(rc).unwrap();
    }
    vm.handle().shutdown();
    vm.wait_timeout(Duration::from_secs(30));
}
