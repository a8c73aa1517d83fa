//! A guest booted by Kiln's `vmm` binary, reached through its agent over vsock.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What to boot.
#[derive(Default)]
pub struct GuestSpec {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    pub mem_mib: u32,
    pub cpus: u8,
    /// `--disk` values.
    pub disks: Vec<String>,
    /// `--net` values.
    pub nets: Vec<String>,
    /// More `vmm` arguments (e.g. `--api-sock`, `--faults`).
    pub extra_args: Vec<String>,
}

/// A running `vmm` process. Killed on drop, so a failing test leaves nothing behind.
pub struct Guest {
    child: Child,
    pub vsock_uds: PathBuf,
    pub serial: PathBuf,
    /// The control API socket.
    pub api_sock: PathBuf,
    pub started: Instant,
}

impl Guest {
    /// Restores the snapshot `snapshot` in a new `vmm` process whose sockets and log go in
    /// `dir` (vsock, serial and API socket are always overridden); `extra` adds more
    /// overrides (`--disk`, `--net`).
    pub fn restore(vmm: &Path, snapshot: &Path, dir: &Path, extra: &[String]) -> Guest {
        std::fs::create_dir_all(dir).unwrap();
        let vsock_uds = dir.join("vsock.sock");
        let serial = dir.join("serial.log");
        let api_sock = dir.join("api.sock");
        let mut cmd = Command::new(vmm);
        cmd.arg("--restore")
            .arg(snapshot)
            .arg("--vsock")
            .arg(format!("cid=3,uds={}", vsock_uds.display()))
            .arg("--serial")
            .arg(&serial)
            .arg("--api-sock")
            .arg(&api_sock)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        let started = Instant::now();
        let child = cmd.spawn().expect("vmm starts");
        Guest {
            child,
            vsock_uds,
            serial,
            api_sock,
            started,
        }
    }

    /// One control API request; the reply as JSON.
    pub fn api(&mut self, request: &str) -> serde_json::Value {
        use std::io::{BufRead, BufReader, Write};
        let end = Instant::now() + Duration::from_secs(30);
        let mut conn = loop {
            match std::os::unix::net::UnixStream::connect(&self.api_sock) {
                Ok(c) => break c,
                Err(e) if Instant::now() > end => self.fail(&format!("API socket: {e}")),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        conn.set_read_timeout(Some(Duration::from_secs(600)))
            .unwrap();
        writeln!(conn, "{request}").unwrap();
        let mut line = String::new();
        BufReader::new(conn).read_line(&mut line).unwrap();
        serde_json::from_str(&line)
            .unwrap_or_else(|e| self.fail(&format!("API reply {line:?}: {e}")))
    }

    /// Kills the `vmm` process at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts `vmm` with `spec`; sockets and logs go in `dir`.
    pub fn start(vmm: &Path, spec: &GuestSpec, dir: &Path) -> Guest {
        let vsock_uds = dir.join("vsock.sock");
        let serial = dir.join("serial.log");
        let api_sock = dir.join("api.sock");
        let mut cmd = Command::new(vmm);
        cmd.arg("--kernel")
            .arg(&spec.kernel)
            .arg("--initrd")
            .arg(&spec.initrd)
            .args(["--cmdline", &spec.cmdline])
            .args(["--mem", &spec.mem_mib.to_string()])
            .args(["--cpus", &spec.cpus.to_string()])
            .arg("--vsock")
            .arg(format!("cid=3,uds={}", vsock_uds.display()))
            .arg("--serial")
            .arg(&serial)
            .arg("--api-sock")
            .arg(&api_sock)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        for d in &spec.disks {
            cmd.args(["--disk", d]);
        }
        for n in &spec.nets {
            cmd.args(["--net", n]);
        }
        cmd.args(&spec.extra_args);
        let started = Instant::now();
        let child = cmd.spawn().expect("vmm starts");
        Guest {
            child,
            vsock_uds,
            serial,
            api_sock,
            started,
        }
    }

    /// The serial console so far.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial).unwrap_or_default()).into()
    }

    pub fn fail(&mut self, what: &str) -> ! {
        let console = self.console();
        let tail: Vec<&str> = console.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "{what}\n--- last serial console lines ---\n{}",
            tail.join("\n")
        );
    }

    /// Waits until the console contains `needle`; returns the time since `vmm` started.
    pub fn wait_console(&mut self, needle: &str, timeout: Duration) -> Duration {
        let end = Instant::now() + timeout;
        loop {
            if self.console().contains(needle) {
                return self.started.elapsed();
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                self.fail(&format!(
                    "vmm exited ({st}) before the console showed {needle:?}"
                ));
            }
            if Instant::now() > end {
                self.fail(&format!(
                    "console did not show {needle:?} within {timeout:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Connects to the guest agent over vsock, retrying while the guest boots.
    pub async fn agent(&mut self, timeout: Duration) -> agent::Client {
        let end = Instant::now() + timeout;
        loop {
            // One attempt can stall while the guest's vsock driver is not up yet (the VMM then
            // holds the CONNECT without an answer), so each attempt gets its own deadline.
            let attempt = agent::Client::connect_vsock_uds(&self.vsock_uds, 10700);
            if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(3), attempt).await {
                return c;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                self.fail(&format!("vmm exited ({st}) before the agent answered"));
            }
            if Instant::now() > end {
                self.fail(&format!("agent did not answer within {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Awaits `fut`, failing with the console tail if it takes longer than `secs`: an agent
    /// call that never returns must fail the test, not hang it.
    pub async fn within<F: std::future::Future>(
        &mut self,
        secs: u64,
        what: &str,
        fut: F,
    ) -> F::Output {
        match tokio::time::timeout(Duration::from_secs(secs), fut).await {
            Ok(v) => v,
            Err(_) => self.fail(&format!("{what} did not finish within {secs} s")),
        }
    }

    /// Waits for `vmm` to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let end = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            if Instant::now() > end {
                self.fail(&format!("vmm still running {timeout:?} after power-off"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("kiln-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
