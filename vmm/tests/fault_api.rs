//! Fault injection through the `vmm` binary and its control API, on /dev/kvm with a hand-made
//! guest (works on PVM and hardware KVM): `--faults` and `--fault-log` flags, `set_faults`,
//! `faults`, `power_cut` on a `cache=writeback` disk, and one clear line per mistake. What
//! the rules do to guest I/O is tested at the device boundary in the `devices` crate.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vmm::tiny_guest::Asm;

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn kernel(&self) -> PathBuf {
        let mut a = Asm::new();
        a.print("up\n").halt_forever();
        let p = self.path("tiny.elf");
        std::fs::write(&p, a.into_elf()).unwrap();
        p
    }
    fn disk(&self, name: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
        p
    }
}

fn vmm_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmm"))
}

fn api(sock: &Path, req: &str) -> serde_json::Value {
    let mut c = UnixStream::connect(sock).unwrap();
    writeln!(c, "{req}").unwrap();
    let mut line = String::new();
    BufReader::new(c).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

fn wait_for(path: &Path, child: &mut Child) {
    let t = Instant::now();
    while !path.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err);
            panic!("vmm exited early ({status}): {err}");
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn rules_are_set_reported_cleared_and_power_cut_ends_the_vm() {
    let s = Scratch::new();
    let kernel = s.kernel();
    let (d0, d1) = (s.disk("d0.img"), s.disk("d1.img"));
    let rules = s.path("faults.toml");
    std::fs::write(
        &rules,
        "seed = 5\n[[block]]\ndisk = 1\nop = \"read\"\naction = \"eio\"\ncount = 2\n",
    )
    .unwrap();
    let sock = s.path("api.sock");
    let mut child = vmm_bin()
        .args(["--kernel", kernel.to_str().unwrap(), "--serial", "off"])
        .args(["--disk", d0.to_str().unwrap()])
        .arg("--disk")
        .arg(format!("{},cache=writeback", d1.display()))
        .arg("--faults")
        .arg(&rules)
        .arg("--fault-log")
        .arg(s.path("faults.jsonl"))
        .arg("--api-sock")
        .arg(&sock)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&sock, &mut child);

    // The file's rules are in force, with counters.
    let r = api(&sock, r#"{"op":"faults"}"#);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["faults"]["seed"], 5);
    assert_eq!(r["faults"]["block"][0]["disk"], 1);
    assert_eq!(r["faults"]["block"][0]["hits"], 0);
    assert_eq!(r["faults"]["block"][0]["matched"], 0);

    // Replace them; the reply shows the new set.
    let r = api(
        &sock,
        r#"{"op":"set_faults","rules":{"seed":9,"net":[],"block":[{"action":"delay","delay_ms":50}],"vsock":[{"action":"reset","port":52}]}}"#,
    );
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["faults"]["block"][0]["action"], "delay");
    assert_eq!(r["faults"]["vsock"][0]["port"], 52);

    // Mistakes: one line each, nothing replaced.
    let r = api(
        &sock,
        r#"{"op":"set_faults","rules":{"block":[{"action":"torn","disk":7}]}}"#,
    );
    assert_eq!(r["ok"], false);
    let e = r["error"].as_str().unwrap();
    assert!(e.contains("keep_bytes"), "{e}");
    let r = api(
        &sock,
        r#"{"op":"set_faults","rules":{"block":[{"action":"eio","disk":7}]}}"#,
    );
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("disk 7 does not exist"),
        "{r}"
    );
    let r = api(
        &sock,
        r#"{"op":"set_faults","rules":{"block":[{"acton":"eio"}]}}"#,
    );
    assert!(r["error"].as_str().unwrap().contains("acton"), "{r}");
    assert_eq!(api(&sock, r#"{"op":"faults"}"#)["faults"]["seed"], 9);

    // `{}` clears every rule.
    let r = api(&sock, r#"{"op":"set_faults","rules":{}}"#);
    assert_eq!(r["ok"], true);
    assert_eq!(r["faults"]["block"].as_array().unwrap().len(), 0);

    let r = api(&sock, r#"{"op":"power_cut","keep":2}"#);
    assert!(
        r["error"].as_str().unwrap().contains("between 0 and 1"),
        "{r}"
    );
    let r = api(&sock, r#"{"op":"power_cut"}"#);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["power_cut"]["cached_disks"], 1);
    assert_eq!(r["power_cut"]["lost_blocks"], 0);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("power cut by the host"), "{stderr}");
    assert!(!sock.exists(), "API socket left behind");
}

#[test]
fn bad_rules_files_and_cache_options_get_one_line_per_mistake() {
    let s = Scratch::new();
    let kernel = s.kernel();
    let disk = s.disk("d.img");
    let bad = s.path("bad.toml");
    std::fs::write(
        &bad,
        "[[block]]\naction = \"delay\"\n[[net]]\nnic = 0\naction = \"drop\"\nprobability = 3\n",
    )
    .unwrap();
    let out = vmm_bin()
        .args(["--kernel", kernel.to_str().unwrap(), "--serial", "off"])
        .args(["--disk", disk.to_str().unwrap(), "--faults"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].contains("bad.toml")
            && lines[0].contains("block[0]")
            && lines[0].contains("delay_ms"),
        "{stderr}"
    );
    assert!(
        lines[1].contains("net[0]") && lines[1].contains("probability"),
        "{stderr}"
    );

    // A rule for a NIC the VM does not have.
    std::fs::write(&bad, "[[net]]\nnic = 0\naction = \"drop\"\n").unwrap();
    let out = vmm_bin()
        .args(["--kernel", kernel.to_str().unwrap(), "--faults"])
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("nic 0 does not exist"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    for (arg, needle) in [
        (format!("{},cache=fast", disk.display()), "cache=writeback"),
        (
            format!("{},ro,cache=writeback", disk.display()),
            "read-only",
        ),
    ] {
        let out = vmm_bin()
            .args(["--kernel", kernel.to_str().unwrap(), "--disk", &arg])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        // One line names the problem (clap adds its "try --help" hint after it).
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.contains(needle), "{arg}: {stderr}");
    }
    let missing = s.path("nope.toml");
    let out = vmm_bin()
        .args(["--kernel", kernel.to_str().unwrap(), "--faults"])
        .arg(&missing)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.toml"));
}
