//! VMM tests on /dev/kvm with hand-made guests: serial output, i8042 reset, virtio-mmio
//! registers, hlt, pause/resume, triple fault, the control API and the `vmm` binary.
//! They work on PVM hosts (these CI machines) and on hardware KVM alike.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vmm::config::SerialOutput;
use vmm::tiny_guest::Asm;
use vmm::{ExitReason, VmConfig};

struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("kiln-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    fn kernel(&self, asm: Asm) -> PathBuf {
        let p = self.path("tiny.elf");
        std::fs::write(&p, asm.into_elf()).unwrap();
        p
    }
    fn config(&self, asm: Asm) -> VmConfig {
        let mut cfg = VmConfig::new(self.kernel(asm));
        cfg.serial = SerialOutput::File(self.path("serial.log"));
        cfg
    }
    fn serial(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.path("serial.log")).unwrap_or_default()).into()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs a VM to its end, failing the test instead of hanging if it never ends.
fn run_to_end(cfg: VmConfig) -> ExitReason {
    let mut vmm = vmm::start(cfg).expect("VM starts");
    match vmm.wait_timeout(Duration::from_secs(30)) {
        Some(r) => r,
        None => panic!("guest did not finish within 30 s"),
    }
}

#[test]
fn guest_prints_on_serial_and_resets_through_i8042() {
    let s = Scratch::new("serial");
    let mut a = Asm::new();
    a.print("hello from a tiny guest\n").i8042_reset();
    let reason = run_to_end(s.config(a));
    assert_eq!(
        reason,
        ExitReason::Reboot {
            via: "i8042 reset".into()
        }
    );
    assert_eq!(s.serial(), "hello from a tiny guest\n");
}

#[test]
fn guest_powers_off_and_resets_through_acpi() {
    let s = Scratch::new("acpi");
    let mut a = Asm::new();
    a.print("bye\n").acpi_poweroff().halt_forever();
    assert_eq!(run_to_end(s.config(a)), ExitReason::PowerOff);
    let mut a = Asm::new();
    a.acpi_reset().halt_forever();
    assert_eq!(
        run_to_end(s.config(a)),
        ExitReason::Reboot {
            via: "ACPI reset".into()
        }
    );
}

#[test]
fn guest_reads_virtio_mmio_identity_of_every_device() {
    let s = Scratch::new("mmio");
    let disk = s.path("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let sw = s.path("switch.sock");
    let _switch = std::os::unix::net::UnixDatagram::bind(&sw).unwrap();
    let mut cfg = s.config(Asm::new());
    cfg.disks.push(disk.to_str().unwrap().parse().unwrap());
    cfg.nets
        .push(format!("switch={}", sw.display()).parse().unwrap());
    cfg.vsock = Some(
        format!("cid=3,uds={}", s.path("vsock.sock").display())
            .parse()
            .unwrap(),
    );

    // Ask the VMM where it will put the devices: same order as configured, rng last.
    let bases: Vec<u64> = (0..4).map(|i| 0xd000_0000 + i * 0x1000).collect();
    let mut a = Asm::new();
    for base in &bases {
        for reg in [0x0, 0x4, 0x8] {
            a.load32(base + reg).print_eax_hex().print(" ");
        }
        a.print("\n");
    }
    a.i8042_reset();
    std::fs::write(&cfg.kernel, a.into_elf()).unwrap();
    let reason = run_to_end(cfg);
    assert_eq!(
        reason,
        ExitReason::Reboot {
            via: "i8042 reset".into()
        }
    );
    let lines: Vec<String> = s.serial().lines().map(str::to_string).collect();
    let expect_ids = [2, 1, 19, 4]; // block, net, vsock, rng
    assert_eq!(lines.len(), 4, "{lines:?}");
    for (line, id) in lines.iter().zip(expect_ids) {
        assert_eq!(
            line.trim(),
            format!("74726976 00000002 {id:08x}"),
            "{lines:?}"
        );
    }
}

#[test]
fn halted_guest_keeps_the_vmm_responsive() {
    let s = Scratch::new("hlt");
    let mut a = Asm::new();
    a.print("H").halt_forever();
    let mut vmm = vmm::start(s.config(a)).unwrap();
    let h = vmm.handle();
    let t = Instant::now();
    while s.serial() != "H" {
        assert!(t.elapsed() < Duration::from_secs(30), "guest never printed");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(h.status().state, "running");
    h.pause();
    assert_eq!(h.status().state, "paused");
    h.resume();
    h.shutdown();
    assert_eq!(
        vmm.wait_timeout(Duration::from_secs(30)),
        Some(ExitReason::Shutdown)
    );
}

#[test]
fn pause_stops_guest_execution_and_resume_continues_it() {
    let s = Scratch::new("pause");
    let mut a = Asm::new();
    a.spin_printing(b'.');
    let mut vmm = vmm::start(s.config(a)).unwrap();
    let h = vmm.handle();
    let log = s.path("serial.log");
    let size = || std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let t = Instant::now();
    while size() < 100 {
        assert!(t.elapsed() < Duration::from_secs(30), "guest never printed");
    }
    h.pause();
    let paused_at = size();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(size(), paused_at, "guest wrote to serial while paused");
    h.resume();
    let t = Instant::now();
    while size() == paused_at {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "guest did not resume"
        );
    }
    h.shutdown();
    assert_eq!(
        vmm.wait_timeout(Duration::from_secs(30)),
        Some(ExitReason::Shutdown)
    );
}

#[test]
fn triple_fault_ends_the_vm_with_a_failure_and_register_dump() {
    let s = Scratch::new("fault");
    let mut a = Asm::new();
    a.print("x").triple_fault();
    let reason = run_to_end(s.config(a));
    assert_ne!(reason.exit_code(), 0, "{reason:?}");
    assert!(reason.describe().contains("rip="), "{}", reason.describe());
}

#[test]
fn smp_guest_boots_with_two_vcpus() {
    let s = Scratch::new("smp");
    let mut a = Asm::new();
    a.print("bsp\n").i8042_reset();
    let mut cfg = s.config(a);
    cfg.cpus = 2;
    assert_eq!(
        run_to_end(cfg),
        ExitReason::Reboot {
            via: "i8042 reset".into()
        }
    );
    assert_eq!(s.serial(), "bsp\n");
}

fn api(sock: &Path, req: &str) -> serde_json::Value {
    let mut c = UnixStream::connect(sock).unwrap();
    writeln!(c, "{req}").unwrap();
    let mut line = String::new();
    BufReader::new(c).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

#[test]
fn control_api_reports_pauses_resumes_and_shuts_down() {
    let s = Scratch::new("api");
    let mut a = Asm::new();
    a.halt_forever();
    let mut cfg = s.config(a);
    let sock = s.path("api.sock");
    cfg.api_sock = Some(sock.clone());
    let mut vmm = vmm::start(cfg).unwrap();
    let st = api(&sock, r#"{"op":"status"}"#);
    assert_eq!(st["ok"], true);
    assert_eq!(st["status"]["state"], "running");
    assert_eq!(st["status"]["mem_mib"], 256);
    assert_eq!(api(&sock, r#"{"op":"pause"}"#)["status"]["state"], "paused");
    assert_eq!(
        api(&sock, r#"{"op":"resume"}"#)["status"]["state"],
        "running"
    );
    let bad = api(&sock, r#"{"op":"explode"}"#);
    assert_eq!(bad["ok"], false);
    assert!(bad["error"].as_str().unwrap().contains("bad request"));
    assert_eq!(api(&sock, r#"{"op":"shutdown"}"#)["ok"], true);
    assert_eq!(
        vmm.wait_timeout(Duration::from_secs(30)),
        Some(ExitReason::Shutdown)
    );
    assert!(!sock.exists(), "API socket left behind");
}

fn vmm_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmm"))
}

#[test]
fn vmm_binary_boots_tiny_elf_prints_and_exits_zero() {
    let s = Scratch::new("bin");
    let mut a = Asm::new();
    a.print("tiny kernel says hi\n").i8042_reset();
    let kernel = s.kernel(a);
    let out = vmm_bin()
        .args(["--kernel", kernel.to_str().unwrap(), "--serial", "stdout"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "tiny kernel says hi\n"
    );
    assert!(stderr.contains("i8042 reset"), "{stderr}");
}

#[test]
fn vmm_binary_fails_on_triple_fault_with_register_dump() {
    let s = Scratch::new("binfault");
    let mut a = Asm::new();
    a.triple_fault();
    let kernel = s.kernel(a);
    let out = vmm_bin()
        .args(["--kernel", kernel.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("rip="), "{stderr}");
}

#[test]
fn bad_user_input_gets_one_clear_line_and_nonzero_exit() {
    let s = Scratch::new("badinput");
    let garbage = s.path("garbage");
    std::fs::write(&garbage, b"not a kernel at all").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![], "--kernel"),
        (
            vec!["--kernel".into(), "/nonexistent/vmlinux".into()],
            "/nonexistent/vmlinux",
        ),
        (
            vec!["--kernel".into(), garbage.display().to_string()],
            "kernel",
        ),
        (
            vec![
                "--kernel".into(),
                garbage.display().to_string(),
                "--disk".into(),
                "/nonexistent.img".into(),
            ],
            "/nonexistent.img",
        ),
        (
            vec![
                "--kernel".into(),
                garbage.display().to_string(),
                "--net".into(),
                "bogus=1".into(),
            ],
            "--net",
        ),
        (
            vec![
                "--kernel".into(),
                garbage.display().to_string(),
                "--mem".into(),
                "1".into(),
            ],
            "--mem",
        ),
    ];
    for (args, needle) in cases {
        let out = vmm_bin().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(lines.len() <= 3, "{args:?}: too chatty: {stderr}");
    }
}

#[test]
fn vmm_binary_stops_cleanly_on_sigterm_and_removes_its_socket() {
    let s = Scratch::new("sigterm");
    let mut a = Asm::new();
    a.print("up\n").halt_forever();
    let kernel = s.kernel(a);
    let sock = s.path("api.sock");
    let mut child = vmm_bin()
        .args([
            "--kernel",
            kernel.to_str().unwrap(),
            "--serial",
            "off",
            "--api-sock",
        ])
        .arg(&sock)
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !sock.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "API socket never appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        api(&sock, r#"{"op":"status"}"#)["status"]["state"],
        "running"
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!sock.exists(), "API socket left behind");
}
