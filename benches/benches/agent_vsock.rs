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

use kiln_benches::{release_vmm, Percentiles};
use orchestrator::host_kind::kvm_can_boot_linux;

const INSIDE: &str = "KILN_BENCH_INSIDE";

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("KILN_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    if let Ok(img) = std::env::var(INSIDE) {
        let vmm = std::env::var("KILN_BENCH_VMM").unwrap();
        return measure(Path::new(&vmm), Path::new(&img), runs);
    }
    let vmm = release_vmm();
    let img = orchestrator::image::build("debian-minimal").expect("image build");
    let kind = kvm_can_boot_linux();
    if kind.can_boot_linux() {
        return measure(&vmm, &img.path, runs);
    }
    println!("{}: measuring inside the emulated KVM host", kind.reason());
    let argv = vec![
        "env".into(),
        format!("{INSIDE}={}", img.path.display()),
        format!("KILN_BENCH_RUNS={runs}"),
        format!("KILN_BENCH_VMM={}", vmm.display()),
        std::env::current_exe().unwrap().display().to_string(),
        "--bench".into(),
    ];
    let opts = orchestrator::emulated_host::RunOptions::new(argv).unwrap();
    let out = orchestrator::emulated_host::run(&opts).expect("emulated host");
    std::process::exit(out.status);
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
    let mut child = Command::new("qemu-system-x86_64")
        .args([
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
        .args(["-serial", "stdio", "-kernel"])
        .arg(img.join("vmlinuz"))
        .arg("-initrd")
        .arg(img.join("initrd.img"))
        .args([
            "-append",
            "console=ttyS0 quiet panic=-1 kiln.noagent kiln.shell",
        ])
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
    // Sends `cmd; echo MARKER` and reads until a line that is exactly MARKER (the console also
    // echoes the command line itself, which contains the marker after other text). Returns
    // false if the marker did not come back within `wait`.
    let mut round_trip = |cmd: &str, marker: &str, wait: Duration| -> bool {
        writeln!(input, "{cmd}; echo {marker}").unwrap();
        input.flush().unwrap();
        let end = Instant::now() + wait;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match lines.recv_timeout(left) {
                Ok(line) if line.trim_end_matches('\r') == marker => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    };
    // Input sent before the shell opens the console is lost: ask until it answers. No prompt
    // and no echo afterwards, so each answer is exactly the marker line.
    let boot = Instant::now();
    while !round_trip("PS1=; stty -echo", "KILN-READY", Duration::from_millis(500)) {
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
