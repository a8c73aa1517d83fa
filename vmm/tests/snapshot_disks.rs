//! Disks and fault rules across a snapshot, through the `vmm` binary on /dev/kvm with a
//! hand-made guest (PVM and hardware KVM alike): a restored disk gets the backend stack it
//! was saved with (its cache mode, even when `--disk` overrides leave `cache=` out), fault
//! rules come from the restore's own `--faults` and never from the snapshot, and mistakes get
//! one line. What a snapshot does to a running disk (write-back of its cache, completions a
//! delay holds back) is tested at the device boundary in `devices` (`block/persist_tests.rs`)
//! and with a Debian guest in `tests/snapshot_storage.rs`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vmm::tiny_guest::Asm;

struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Self {
        Scratch(tempfile::tempdir().unwrap())
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

/// A `vmm` process, killed on drop unless [`finish`] waited for it.
struct VmmProcess(Option<Child>);

impl Drop for VmmProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn vmm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmm"));
    c.stdin(Stdio::null()).stdout(Stdio::null());
    c
}

fn spawn(cmd: &mut Command, api: &Path) -> VmmProcess {
    let mut p = VmmProcess(Some(cmd.stderr(Stdio::piped()).spawn().unwrap()));
    let t = Instant::now();
    while !api.exists() {
        let c = p.0.as_mut().unwrap();
        if let Ok(Some(st)) = c.try_wait() {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(c.stderr.as_mut().unwrap(), &mut err);
            panic!("vmm exited ({st}) before its API socket appeared: {err}");
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
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    writeln!(c, "{req}").unwrap();
    let mut line = String::new();
    BufReader::new(c).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply {line:?}: {e}"))
}

/// Waits for `p` to exit; returns whether it succeeded and its stderr.
fn finish(mut p: VmmProcess) -> (bool, String) {
    let out = p.0.take().unwrap().wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn restore(snap: &Path, sock: &Path, extra: &[String]) -> Command {
    let mut c = vmm();
    c.arg("--restore")
        .arg(snap)
        .args(["--serial", "off", "--api-sock"])
        .arg(sock)
        .args(extra);
    c
}

#[test]
fn restored_disks_keep_their_cache_mode_and_take_the_restores_fault_rules() {
    let s = Scratch::new();
    let mut guest = Asm::new();
    guest.print("up\n").halt_forever();
    let kernel = s.file("tiny.elf", &guest.into_elf());
    let disk0 = s.file("d0.img", &[0u8; 1 << 20]);
    let disk1 = s.file("d1.img", &[0u8; 1 << 20]);
    let boot_rules = s.file(
        "boot.toml",
        b"seed = 5\n[[block]]\ndisk = 1\nop = \"read\"\naction = \"eio\"\n",
    );
    let sock = s.path("boot.sock");
    let snap = s.path("snap");
    let p = spawn(
        vmm()
            .arg("--kernel")
            .arg(&kernel)
            .args(["--serial", "off", "--api-sock"])
            .arg(&sock)
            .arg("--disk")
            .arg(format!("{},cache=writeback", disk0.display()))
            .arg("--disk")
            .arg(&disk1)
            .arg("--faults")
            .arg(&boot_rules),
        &sock,
    );
    assert_eq!(api(&sock, r#"{"op":"faults"}"#)["faults"]["seed"], 5);
    assert_eq!(api(&sock, r#"{"op":"pause"}"#)["ok"], true);
    let r = api(
        &sock,
        &format!(r#"{{"op":"snapshot","dir":"{}"}}"#, snap.display()),
    );
    assert_eq!(r["ok"], true, "{r}");
    drop(p);
    let copies: Vec<PathBuf> = [&disk0, &disk1]
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let c = s.path(&format!("copy{i}.img"));
            std::fs::copy(d, &c).unwrap();
            c
        })
        .collect();
    let overrides = |second: &str| {
        vec![
            "--disk".to_string(),
            copies[0].display().to_string(),
            "--disk".to_string(),
            format!("{}{second}", copies[1].display()),
        ]
    };

    // Disk copies without `cache=` and no --faults: disk 0 has its write cache back (a power
    // cut finds one cached disk), and no rule came along with the snapshot.
    let sock1 = s.path("r1.sock");
    let p = spawn(&mut restore(&snap, &sock1, &overrides("")), &sock1);
    let r = api(&sock1, r#"{"op":"faults"}"#);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["faults"]["block"].as_array().unwrap().len(), 0, "{r}");
    assert_ne!(r["faults"]["seed"], 5, "{r}");
    let r = api(&sock1, r#"{"op":"power_cut"}"#);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["power_cut"]["cached_disks"], 1, "{r}");
    let (ok, stderr) = finish(p);
    assert!(ok && stderr.contains("power cut by the host"), "{stderr}");

    // The restore's own rules file and fault log are in force.
    let restore_rules = s.file(
        "restore.toml",
        b"seed = 9\n[[block]]\ndisk = 0\naction = \"delay\"\ndelay_ms = 20\n",
    );
    let sock2 = s.path("r2.sock");
    let mut args = overrides("");
    args.extend([
        "--faults".into(),
        restore_rules.display().to_string(),
        "--fault-log".into(),
        s.path("r2.jsonl").display().to_string(),
    ]);
    let p = spawn(&mut restore(&snap, &sock2, &args), &sock2);
    let r = api(&sock2, r#"{"op":"faults"}"#);
    assert_eq!(r["faults"]["seed"], 9, "{r}");
    assert_eq!(r["faults"]["block"][0]["disk"], 0, "{r}");
    assert_eq!(r["faults"]["block"][0]["action"], "delay", "{r}");
    assert_eq!(r["faults"]["block"][0]["hits"], 0, "{r}");
    assert!(s.path("r2.jsonl").exists(), "the fault log was not opened");
    assert_eq!(api(&sock2, r#"{"op":"shutdown"}"#)["ok"], true);
    let (ok, stderr) = finish(p);
    assert!(ok, "{stderr}");

    // Mistakes: one line each, and no guest runs.
    for (extra, needle) in [
        (overrides(",cache=writeback"), "keeps its cache mode"),
        (
            {
                let bad = s.file("bad.toml", b"[[block]]\ndisk = 7\naction = \"eio\"\n");
                let mut a = overrides("");
                a.extend(["--faults".into(), bad.display().to_string()]);
                a
            },
            "disk 7 does not exist",
        ),
    ] {
        let out = restore(&snap, &s.path("never.sock"), &extra)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} was accepted");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "want one line: {stderr}");
        assert!(lines[0].contains(needle), "{needle:?} not in {stderr}");
        assert!(!s.path("never.sock").exists(), "the VM started");
    }
}
