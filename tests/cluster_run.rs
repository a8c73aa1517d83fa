//! End-to-end: `orchestrator run` as users run it, the binary and its exit status.
//!
//! - `fresh-smoke` on the built-in six-node reference cluster passes, writes its reports and
//!   serial logs, and leaves no process, socket or disk behind (on hardware KVM, or with
//!   KILN_TEST_FRESH_SMOKE=1: in the emulated host it skips itself, loudly, see
//!   `fresh_smoke_skip_reason`).
//! - A scenario with a step that must fail (a wrong expectation) fails the run with exit
//!   status 1, reports that step as failed and the rest as skipped, and cleans up: the
//!   checks are not vacuous. Before it, the node is frozen, thawed, shut down and started
//!   again through scenario steps.
//! - SIGINT in the middle of a run stops it and cleans up.
//! - `up` keeps a cluster running; `status`, `exec`, `logs` and `stop` work against it
//!   from other processes, and `stop` leaves nothing behind.
//! - Device faults as scenario steps on one node: a `fault` rule (EIO on flushes of the disk
//!   the spec names) fails the guest's fsync and the report names it, `clear_faults` lets the
//!   same fsync pass, a `power_cut` loses the write the guest did not flush and keeps the one
//!   it flushed, `start` boots the node on the same disks, and the run directory keeps the
//!   node's fault log.
//!
//! The binary chooses where the VMs run (`--host auto`): on a PVM host like ours the whole
//! run moves into the emulated KVM host, on hardware KVM it runs directly.

mod e2e;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::say;

/// The `orchestrator` and `vmm` binaries of this test's profile, built if out of date.
fn binaries() -> PathBuf {
    let profile = orchestrator::vmm_binary::profile_dir();
    orchestrator::vmm_binary::try_build_bin(&profile, "vmm", "vmm").unwrap();
    orchestrator::vmm_binary::try_build_bin(&profile, "orchestrator", "orchestrator").unwrap()
}

/// A fresh, empty run directory in the Kiln cache (shared with the emulated host).
fn run_dir(name: &str) -> PathBuf {
    let root = orchestrator::cache::cache_root().join("run");
    std::fs::create_dir_all(&root).unwrap();
    let dir = root.join(format!("test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Pids of running `vmm` and QEMU processes.
fn vm_processes() -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if comm == "vmm" || comm.starts_with("qemu-system") {
            found.push((pid, comm.to_string()));
        }
    }
    found
}

/// Fails if a VM process appeared since `before`, or the run directory still holds a
/// socket or a disk image.
fn assert_nothing_left(before: &[(u32, String)], dir: &Path) {
    // Processes get a moment to be reaped.
    let deadline = Instant::now() + Duration::from_secs(10);
    let new = loop {
        let new: Vec<_> = vm_processes()
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        if new.is_empty() || Instant::now() > deadline {
            break new;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(new.is_empty(), "VM processes left running: {new:?}");
    let mut leftovers = Vec::new();
    walk(dir, &mut |p: &Path, kind: std::fs::FileType| {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_socket() || orchestrator::cluster::is_disk_image(p) {
            leftovers.push(p.to_path_buf());
        }
    });
    assert!(
        leftovers.is_empty(),
        "left in {}: {leftovers:?}",
        dir.display()
    );
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path, std::fs::FileType)) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            walk(&entry.path(), f);
        } else {
            f(&entry.path(), kind);
        }
    }
}

fn report(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("report.json"))
        .unwrap_or_else(|e| panic!("no report.json in {}: {e}", dir.display()));
    serde_json::from_str(&text).unwrap()
}

fn outcomes(report: &serde_json::Value) -> Vec<String> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["outcome"].as_str().unwrap().to_string())
        .collect()
}

/// A one-node cluster with `steps` as its scenario `check`.
fn one_node_spec(dir: &Path, steps: &str) -> PathBuf {
    let spec = format!(
        r#"name = "one"

[[network]]
name = "net0"
subnet = "10.1.0.0/24"

[[node]]
name = "solo"
role = "worker"
image = "debian-node"
memory = 384
networks = [{{ network = "net0", address = "10.1.0.2/24" }}]
ready = [{{ unit = "multi-user.target" }}]

[[scenario]]
name = "check"
steps = [
{steps}
]
"#
    );
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("one.toml");
    std::fs::write(&path, spec).unwrap();
    path
}

/// Why the six-node `fresh-smoke` does not run in this test process, if it does not: inside
/// the emulated KVM host it takes 15-30 minutes on a 2-core machine of this kind (six nested
/// Debian guests share one emulated CPU), which does not fit in CI's budget next to the rest
/// of the suite. The README's first command runs it in full; `KILN_TEST_FRESH_SMOKE=1` runs
/// it here too. On hardware KVM it always runs.
fn fresh_smoke_skip_reason() -> Option<String> {
    if std::env::var("KILN_TEST_FRESH_SMOKE").as_deref() == Ok("1") {
        return None;
    }
    let kind = orchestrator::host_kind::kvm_can_boot_linux();
    if kind.can_boot_linux() {
        return None;
    }
    Some(format!(
        "{}, so the six nodes would run inside the emulated KVM host (15-30 min on this kind \
         of machine, over CI's budget); run it with `cargo run --release -p orchestrator -- \
         run fresh-smoke` (the README's first command) or set KILN_TEST_FRESH_SMOKE=1",
        kind.reason()
    ))
}

#[test]
fn fresh_smoke_passes_and_leaves_nothing_behind() {
    if let Some(reason) = fresh_smoke_skip_reason() {
        say(&format!("SKIPPED fresh-smoke end-to-end test: {reason}"));
        return;
    }
    let _serial = e2e::one_at_a_time();
    let orchestrator = binaries();
    let dir = run_dir("fresh-smoke");
    let before = vm_processes();
    let started = Instant::now();
    let status = Command::new(&orchestrator)
        .args(["run", "fresh-smoke", "--run-dir"])
        .arg(&dir)
        .status()
        .unwrap();
    say(&format!(
        "e2e figure: orchestrator run fresh-smoke took {:.0} s in all",
        started.elapsed().as_secs_f64()
    ));
    let report = report(&dir);
    assert!(
        status.success(),
        "fresh-smoke failed ({status}); see {}",
        dir.display()
    );
    let steps = outcomes(&report);
    assert!(steps.len() >= 20, "{steps:?}");
    assert!(steps.iter().all(|s| s == "passed"), "{steps:?}");
    // The negative proof inside the scenario: a read on the partitioned minority failed.
    assert!(report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["action"] == "fail" && s["outcome"] == "passed"));
    for phase in report["phases"].as_array().unwrap() {
        let (name, seconds) = (phase[0].as_str().unwrap(), phase[1].as_f64().unwrap());
        say(&format!(
            "e2e figure: fresh-smoke phase {name}: {seconds:.1} s"
        ));
    }
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert!(
        junit.contains(&format!("tests=\"{}\" failures=\"0\"", steps.len())),
        "{junit}"
    );
    for node in ["node01", "node02", "node03", "node04", "node05", "node06"] {
        let log = std::fs::read_to_string(dir.join(node).join("serial.log")).unwrap();
        assert!(log.contains(&format!("{node} login")), "{node}: {log}");
    }
    assert_nothing_left(&before, &dir);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failing_step_fails_the_run_and_cleans_up() {
    let _serial = e2e::one_at_a_time();
    let orchestrator = binaries();
    let dir = run_dir("negative");
    let spec = one_node_spec(
        &dir.with_extension("spec"),
        r#"{ action = "boot" },
{ action = "freeze", node = "solo" },
{ action = "thaw", node = "solo" },
{ action = "succeed", node = "solo", command = "echo hello", expect = "hello" },
{ action = "shutdown", node = "solo" },
{ action = "start", node = "solo" },
{ action = "wait_ready", node = "solo" },
{ action = "succeed", node = "solo", command = "echo hello", expect = "goodbye" },
{ action = "succeed", node = "solo", command = "true" },"#,
    );
    let before = vm_processes();
    let status = Command::new(&orchestrator)
        .args(["run", "check", "--cluster"])
        .arg(&spec)
        .arg("--run-dir")
        .arg(&dir)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1), "a failing step must fail the run");
    let report = report(&dir);
    let mut expected = vec!["passed"; 7];
    expected.extend(["failed", "skipped"]);
    assert_eq!(outcomes(&report), expected);
    let why = report["steps"][7]["message"].as_str().unwrap();
    assert!(why.contains("goodbye"), "{why}");
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert!(junit.contains("failures=\"1\" skipped=\"1\""), "{junit}");
    assert_nothing_left(&before, &dir);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(dir.with_extension("spec")).unwrap();
}

#[test]
fn sigint_stops_a_run_and_cleans_up() {
    let _serial = e2e::one_at_a_time();
    let orchestrator = binaries();
    let dir = run_dir("sigint");
    let spec = one_node_spec(
        &dir.with_extension("spec"),
        r#"{ action = "boot" },
{ action = "sleep", duration = "10m" },"#,
    );
    let before = vm_processes();
    let mut cmd = Command::new(&orchestrator);
    cmd.args(["run", "check", "--cluster"])
        .arg(&spec)
        .arg("--run-dir")
        .arg(&dir);
    // Wait until the node is up and the run sits in its long step.
    let (mut child, drain) = start_until(cmd, "sleep 10m");
    // SAFETY: plain kill(2) on our own child, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGINT) }, 0);
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run did not stop within 60 s of SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    say(&format!(
        "e2e figure: run stopped {:.1} s after SIGINT ({status})",
        started.elapsed().as_secs_f64()
    ));
    let seen = drain.join().unwrap();
    assert_eq!(status.code(), Some(130), "{status}: {}", seen.join("\n"));
    assert_nothing_left(&before, &dir);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(dir.with_extension("spec")).unwrap();
}

#[test]
fn fault_steps_and_a_power_cut_act_on_the_guest_and_are_reported() {
    let _serial = e2e::one_at_a_time();
    let orchestrator = binaries();
    let dir = run_dir("faults");
    let spec_dir = dir.with_extension("spec");
    std::fs::create_dir_all(&spec_dir).unwrap();
    let spec = spec_dir.join("faults.toml");
    // A raw disk (no file system: nothing but these commands writes or flushes it) with a
    // write-back cache; the guest finds it by its serial, the spec's disk name.
    std::fs::write(
        &spec,
        r#"name = "faults"

[[network]]
name = "net0"
subnet = "10.1.0.0/24"

[[node]]
name = "solo"
role = "storage"
image = "debian-node"
memory = 384
disks = [{ name = "raw", size = "64M", cache = "writeback" }]
networks = [{ network = "net0", address = "10.1.0.2/24" }]
ready = [{ unit = "multi-user.target" }]

[[scenario]]
name = "check"
steps = [
  { action = "boot" },
  { action = "fault", node = "solo", disk = "raw", rule = { op = "flush", action = "eio" } },
  { action = "fail", node = "solo", command = "dd if=/dev/zero of=/dev/disk/by-id/virtio-raw bs=4k count=1 oflag=direct conv=fsync" },
  { action = "clear_faults", node = "solo" },
  { action = "succeed", node = "solo", command = "dd if=/dev/zero of=/dev/disk/by-id/virtio-raw bs=4k count=1 oflag=direct conv=fsync" },
  # Block 1 is written and flushed; block 2 is written after it (O_DIRECT: it reaches the
  # disk's write cache) and never flushed.
  { action = "succeed", node = "solo", command = "printf kiln-synced | dd of=/dev/disk/by-id/virtio-raw bs=4k seek=1 conv=sync,fsync oflag=direct status=none && printf kiln-unsynced | dd of=/dev/disk/by-id/virtio-raw bs=4k seek=2 conv=sync oflag=direct status=none" },
  { action = "power_cut", node = "solo" },
  { action = "start", node = "solo" },
  { action = "wait_ready", node = "solo" },
  { action = "succeed", node = "solo", command = "dd if=/dev/disk/by-id/virtio-raw bs=4k skip=1 count=1 status=none | tr -d '\\000'", expect = "kiln-synced" },
  { action = "succeed", node = "solo", command = "test -z \"$(dd if=/dev/disk/by-id/virtio-raw bs=4k skip=2 count=1 status=none | tr -d '\\000')\" && echo lost", expect = "lost" },
]
"#,
    )
    .unwrap();
    let before = vm_processes();
    let started = Instant::now();
    let status = Command::new(&orchestrator)
        .args(["run", "check", "--cluster"])
        .arg(&spec)
        .arg("--run-dir")
        .arg(&dir)
        .status()
        .unwrap();
    say(&format!(
        "e2e figure: the fault steps scenario took {:.0} s in all",
        started.elapsed().as_secs_f64()
    ));
    let report = report(&dir);
    assert!(status.success(), "{status}; see {}", dir.display());
    let steps = report["steps"].as_array().unwrap();
    assert!(outcomes(&report).iter().all(|s| s == "passed"));
    // The EIO the guest saw is the rule's, on the disk the spec named, and only there.
    let faults_of = |i: usize| steps[i]["faults"].clone();
    assert_eq!(
        faults_of(2),
        serde_json::json!(["solo raw (disk1): 1 × flush eio (block[0])"]),
        "{report}"
    );
    assert!(steps[2]["message"]
        .as_str()
        .unwrap()
        .contains("Input/output error"));
    for quiet in [4, 5] {
        assert!(faults_of(quiet).is_null(), "step {quiet}: {report}");
    }
    // The power cut dropped exactly the one unflushed block.
    let cut = steps[6]["message"].as_str().unwrap();
    assert!(
        cut.contains("1 unflushed 4 KiB block(s) lost, 0 kept, on 1 write-back disk(s)"),
        "{cut}"
    );
    let log = std::fs::read_to_string(dir.join("solo").join("faults.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 1, "{log}");
    assert_eq!(
        (
            &records[0]["device"],
            &records[0]["op"],
            &records[0]["action"]
        ),
        (
            &serde_json::json!("disk1"),
            &serde_json::json!("flush"),
            &serde_json::json!("eio")
        )
    );
    assert!(
        !dir.join("solo").join("faults.toml").exists(),
        "cleared rules (seed 0) start no --faults file"
    );
    assert_nothing_left(&before, &dir);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&spec_dir).unwrap();
}

/// Runs `orchestrator ARGS...` to completion: (exit code, stdout, stderr).
fn orchestrator_cmd(bin: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn up_keeps_a_cluster_for_status_exec_logs_and_stop() {
    let _serial = e2e::one_at_a_time();
    let orchestrator = binaries();
    let dir = run_dir("up");
    let spec = one_node_spec(&dir.with_extension("spec"), r#"{ action = "boot" },"#);
    let before = vm_processes();
    let mut cmd = Command::new(&orchestrator);
    cmd.args(["up", "--cluster"])
        .arg(&spec)
        .arg("--run-dir")
        .arg(&dir);
    let (mut owner, drain) = start_until(cmd, "cluster is up");
    let d = dir.to_str().unwrap();

    let (code, out, _) = orchestrator_cmd(&orchestrator, &["status", "--run-dir", d]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("solo") && out.contains("running"), "{out}");

    let (code, out, err) = orchestrator_cmd(
        &orchestrator,
        &[
            "exec",
            "--run-dir",
            d,
            "solo",
            "--",
            "echo out; echo err >&2; hostname; exit 3",
        ],
    );
    assert_eq!(code, 3, "exit code of the command: {out} {err}");
    assert_eq!(out, "out\nsolo\n");
    assert_eq!(err, "err\n");

    let (code, out, _) = orchestrator_cmd(&orchestrator, &["logs", "--run-dir", d, "solo"]);
    assert_eq!(code, 0);
    assert!(out.contains("KILN-AGENT-READY"), "{out}");

    let (code, _, err) = orchestrator_cmd(
        &orchestrator,
        &["exec", "--run-dir", d, "nosuch", "--", "true"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("no node \"nosuch\"; nodes: solo"), "{err}");

    let (code, out, err) = orchestrator_cmd(&orchestrator, &["stop", "--run-dir", d]);
    assert_eq!(code, 0, "{out} {err}");
    let status = owner.0.wait().unwrap();
    assert!(status.success(), "{status}");
    drain.join().unwrap();
    let (code, _, err) = orchestrator_cmd(&orchestrator, &["status", "--run-dir", d]);
    assert_eq!(code, 1);
    assert!(err.contains("no cluster is running"), "{err}");
    assert!(dir.join("solo").join("serial.log").is_file());
    assert_nothing_left(&before, &dir);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(dir.with_extension("spec")).unwrap();
}

/// Starts `cmd` and returns once its stderr shows `marker` (failing the test after ten
/// minutes). Its stderr keeps being drained and echoed (a closed pipe would end it with
/// EPIPE); the thread returns every line when the process ends.
fn start_until(
    mut cmd: Command,
    marker: &'static str,
) -> (Interrupted, std::thread::JoinHandle<Vec<String>>) {
    let mut child = Interrupted(cmd.stderr(Stdio::piped()).spawn().unwrap());
    let stderr = child.0.stderr.take().unwrap();
    let (reached, seen_marker) = std::sync::mpsc::channel();
    let drain = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("  | {line}");
            if line.contains(marker) {
                let _ = reached.send(());
            }
            seen.push(line);
        }
        seen
    });
    if seen_marker.recv_timeout(Duration::from_secs(600)).is_err() {
        drop(child);
        panic!(
            "never saw {marker:?}:\n{}",
            drain.join().unwrap().join("\n")
        );
    }
    (child, drain)
}

/// A child `orchestrator` that gets SIGINT (and is awaited) if a failing test drops it, so
/// that a failed assertion leaves no cluster behind.
struct Interrupted(std::process::Child);

impl Drop for Interrupted {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: kill(2) on our own child, not reaped yet.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
            let _ = self.0.wait();
        }
    }
}
