//! Shared helpers for Kiln's benchmarks: percentiles, series with failures counted, child-process
//! measurement, time to a guest's first output, and finding the freshly built release binaries.

pub mod nested;
pub mod pvh;
pub mod qemu_monitor;
pub mod series;
pub mod tiny;

pub use pvh::pvh_elf;
pub use series::{ms, ratio, Series};

use std::path::{Path, PathBuf};
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
    measure_while(cmd, timeout, |_, _| ()).map(|(run, ())| run)
}

/// Like [`measure`], and also the time from launch to the first byte the child writes to
/// `serial` (where its guest's serial console goes: a file that is absent or empty at launch),
/// or why there was none. The same clock as [`first_byte`]: the file is polled while the child
/// runs.
pub fn measure_first_output(
    cmd: &mut Command,
    serial: &Path,
    timeout: Duration,
) -> std::io::Result<(ChildRun, Result<Duration, String>)> {
    measure_while(cmd, timeout, |t, exited| {
        first_byte_until(serial, t, timeout, exited)
    })
}

/// Like [`measure`]; `during` runs after the launch, while the child runs, and is given the
/// launch instant and a check whether the child has exited yet.
pub fn measure_while<T>(
    cmd: &mut Command,
    timeout: Duration,
    during: impl FnOnce(Instant, &dyn Fn() -> bool) -> T,
) -> std::io::Result<(ChildRun, T)> {
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
    let exited = || {
        // SAFETY: siginfo_t is plain data filled in by the kernel; WNOWAIT leaves the child
        // unreaped (and its pid ours) for the wait4 below.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: si_pid is set (non-zero) only when waitid reported a child.
        r != 0 || unsafe { info.si_pid() } != 0
    };
    let out = during(t, &exited);
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
    Ok((
        ChildRun {
            wall,
            max_rss_kib: usage.ru_maxrss as u64,
            code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        },
        out,
    ))
}

/// Waits until `path` is a non-empty file (a guest's serial log: its first byte marks the
/// guest's first instructions running); the time since `t`. Polls without sleeping, so the
/// resolution is a `stat` call.
pub fn first_byte(path: &Path, t: Instant, timeout: Duration) -> Result<Duration, String> {
    first_byte_until(path, t, timeout, &|| false)
}

/// [`first_byte`], giving up early once `gone()` says nothing more will be written.
pub fn first_byte_until(
    path: &Path,
    t: Instant,
    timeout: Duration,
    gone: &dyn Fn() -> bool,
) -> Result<Duration, String> {
    let written = || {
        std::fs::metadata(path)
            .map(|m| m.len() > 0)
            .unwrap_or(false)
    };
    loop {
        if written() {
            return Ok(t.elapsed());
        }
        if gone() {
            // It may have written just before it went.
            return match written() {
                true => Ok(t.elapsed()),
                false => Err(format!("exited with no output in {}", path.display())),
            };
        }
        if t.elapsed() > timeout {
            return Err(format!("no output in {}", path.display()));
        }
        std::hint::spin_loop();
    }
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
