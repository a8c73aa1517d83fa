//! Shared helpers for Kiln's benchmarks: percentiles, child-process measurement, and finding
//! the freshly built release binaries.

pub mod nested;
pub mod pvh;
pub mod qemu_monitor;

pub use pvh::pvh_elf;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// p50/p95/p99 (nearest rank) of a sample.
#[derive(Clone, Copy, Debug)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

impl Percentiles {
    /// Computes percentiles of `v` (sorted in place). Panics on an empty sample.
    pub fn of(v: &mut [f64]) -> Self {
        assert!(!v.is_empty(), "no samples");
        v.sort_by(|a, b| a.total_cmp(b));
        let at = |p: f64| v[(((p / 100.0) * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Percentiles {
            p50: at(50.0),
            p95: at(95.0),
            p99: at(99.0),
        }
    }

    /// One table row: `name  p50  p95  p99  unit`.
    pub fn row(&self, name: &str, unit: &str) -> String {
        format!(
            "{name:<40} p50 {:>10.2}  p95 {:>10.2}  p99 {:>10.2}  {unit}",
            self.p50, self.p95, self.p99
        )
    }
}

/// What one child run cost.
#[derive(Clone, Copy, Debug)]
pub struct ChildRun {
    pub wall: Duration,
    /// Peak resident set size in KiB (`ru_maxrss`).
    pub max_rss_kib: u64,
    /// Exit code, or `None` if a signal (or the timeout) ended it.
    pub code: Option<i32>,
}

/// Runs `cmd` to completion (output discarded) and reports its wall time and peak RSS. A child
/// still running after `timeout` is killed, so a hung peer cannot hang the benchmark.
pub fn measure(cmd: &mut Command, timeout: Duration) -> std::io::Result<ChildRun> {
    let t = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id() as libc::pid_t;
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(timeout).is_err() {
            // SAFETY: the child has not been reaped yet (we are told when it is), so the pid
            // is still ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let mut status = 0;
    // SAFETY: rusage is plain data filled in by the kernel; we wait for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = t.elapsed();
    let err = std::io::Error::last_os_error();
    let _ = done.send(());
    let _ = watchdog.join();
    if r < 0 {
        return Err(err);
    }
    std::mem::forget(child); // already reaped by wait4
    Ok(ChildRun {
        wall,
        max_rss_kib: usage.ru_maxrss as u64,
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
    })
}

/// Builds the `vmm` binary in release mode and returns its path.
pub fn release_vmm() -> PathBuf {
    let profile_dir = orchestrator::vmm_binary::profile_dir();
    // Benches run from target/release; build the vmm for that same profile directory.
    orchestrator::vmm_binary::build_vmm(&profile_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!((p.p50, p.p95, p.p99), (50.0, 95.0, 99.0));
        let mut one = vec![7.0];
        assert_eq!(Percentiles::of(&mut one).p99, 7.0);
    }
}
