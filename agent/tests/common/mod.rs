//! Test fixture: the real `agent serve --unix` binary as a subprocess.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent::Client;

/// A running agent on a Unix socket in its own temporary directory.
pub struct Agent {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
}

impl Agent {
    /// Starts `agent serve --unix DIR/agent.sock` plus `extra` arguments and waits for its
    /// ready line.
    pub fn start(extra: &[&str]) -> Agent {
        Self::start_with_env(extra, &[])
    }

    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("agent.sock");
        let mut child = Command::new(env!("CARGO_BIN_EXE_agent"))
            .arg("serve")
            .arg("--unix")
            .arg(&socket)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn agent");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read ready line");
        assert!(
            line.starts_with("KILN-AGENT-READY "),
            "unexpected first line: {line:?}"
        );
        assert!(line.contains(&format!("listen=unix:{}", socket.display())));
        Agent { child, dir, socket }
    }

    pub async fn client(&self) -> Client {
        Client::connect_unix(&self.socket).await.expect("connect")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Only our own child.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True when `pid` no longer runs (gone, or a zombie nobody reaped yet).
pub fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// Waits until `pid` is dead; false if it is still alive after a generous bound (the
/// bound only keeps a broken build from hanging the suite).
pub async fn wait_dead(pid: u32) -> bool {
    wait_until(|| is_dead(pid)).await
}

/// Waits until `pid` has disappeared entirely (reaped); see [`wait_dead`].
pub async fn wait_gone(pid: u32) -> bool {
    wait_until(|| !Path::new(&format!("/proc/{pid}")).exists()).await
}

/// Polls `cond` without blocking the async runtime (tasks keep running meanwhile).
pub async fn wait_until(cond: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// Deterministic pseudo-random bytes (xorshift), so content is not trivially compressible.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Like [`wait_until`] for an asynchronous condition.
pub async fn wait_until_async<F, Fut>(cond: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond().await
}
