//! Exec round-trip latency of `true` through the Kiln agent over vsock in a real VM (Kiln's
//! `vmm`, `debian-minimal` with the agent as PID 1), next to the NixOS-test-driver style
//! baseline measured in the same run: a shell on the serial console of the same kernel and
//! initramfs under QEMU (`-M microvm -accel kvm`), driven by writing `true; echo MARKER` and
//! reading until the marker comes back.
//!
//! On a host whose /dev/kvm cannot boot Linux (PVM), the benchmark re-runs itself inside the
//! emulated KVM host, so both sides run on nested KVM there.
//!
//! Run: `cargo bench -p kiln-benches --bench agent_vsock` (KILN_BENCH_RUNS, default 1000).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_benches::{nested, Percentiles};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs = nested::runs(1000);
    let (vmm, img) = nested::debian_minimal_here(runs);
    measure(&vmm, &img, runs);
}

fn measure(vmm: &Path, img: &Path, runs: usize) {
    println!("exec round trip of `true`, {runs} runs each, milliseconds");
    let a = Percentiles::of(&mut agent_over_vsock(vmm, img, runs));
    println!("{}", a.row("kiln agent over vsock, `true`", "ms"));
    // The shell runs `true` as a builtin; `/bin/true` forks and execs like the agent must.
    for cmd in ["true", "/bin/true"] {
        let s = Percentiles::of(&mut shell_over_serial(img, runs, cmd));
        println!(
            "{}",
            s.row(&format!("shell over serial console, `{cmd}`"), "ms")
        );
        println!(
            "ratio agent / serial shell `{cmd}`: p50 {:.2}  p95 {:.2}  p99 {:.2}",
            a.p50 / s.p50,
            a.p95 / s.p95,
            a.p99 / s.p99
        );
    }
}

fn agent_over_vsock(vmm: &Path, img: &Path, runs: usize) -> Vec<f64> {
    let dir = std::env::temp_dir().join(format!("kiln-bench-agent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let uds = dir.join("vsock.sock");
    let mut child = Command::new(vmm)
        .arg("--kernel")
        .arg(img.join("vmlinuz"))
        .arg("--initrd")
        .arg(img.join("initrd.img"))
        .args(["--cmdline", "console=ttyS0 quiet panic=-1", "--mem", "256"])
        .arg("--vsock")
        .arg(format!("cid=3,uds={}", uds.display()))
        .args(["--serial", "off"])
        .stderr(Stdio::null())
        .spawn()
        .expect("vmm starts");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let samples = rt.block_on(async {
        let end = Instant::now() + Duration::from_secs(120);
        let client = loop {
            if let Ok(c) = agent::Client::connect_vsock_uds(&uds, 10700).await {
                break c;
            }
            assert!(Instant::now() < end, "agent did not answer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut v = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            let out = client
                .exec_buffered(agent::ExecRequest::argv(["true"]))
                .await
                .unwrap();
            v.push(t.elapsed().as_secs_f64() * 1000.0);
            assert!(out.status.success());
        }
        let _ = client.poweroff().await;
        v
    });
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    samples
}

fn shell_over_serial(img: &Path, runs: usize, cmd: &str) -> Vec<f64> {
    let mut child =
        nested::qemu_microvm(img, "console=ttyS0 quiet panic=-1 kiln.noagent kiln.shell")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu starts");
    let mut input = child.stdin.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Sends `cmd; echo MARKER` and reads until a line holding MARKER (kernel messages may
    // share the line). Returns false if the marker did not come back within `wait`.
    // The marker is assembled by printf, so the echoed command line never contains it.
    let mut round_trip = |cmd: &str, tag: &str, wait: Duration| -> bool {
        let marker = format!("<{tag}>");
        writeln!(input, "{cmd}; printf '<%s>\\n' {tag}").unwrap();
        input.flush().unwrap();
        let end = Instant::now() + wait;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(&marker) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    };
    // Input sent before the shell opens the console is lost: ask until it answers. No prompt
    // and no echo afterwards.
    let boot = Instant::now();
    while !round_trip("PS1=; stty -echo", "READY", Duration::from_millis(500)) {
        assert!(
            boot.elapsed() < Duration::from_secs(120),
            "no shell on the serial console"
        );
    }
    let mut v = Vec::with_capacity(runs);
    for i in 0..runs {
        let t = Instant::now();
        assert!(round_trip(cmd, &format!("M{i}"), Duration::from_secs(30)));
        v.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let _ = writeln!(input, "poweroff -f");
    let _ = child.wait();
    v
}
