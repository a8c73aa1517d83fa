//! One `vmm` child process, tracked through a pidfd so that signals never reach a recycled
//! pid, and registered process-wide so a signal handler can tear everything down.
//!
//! Children are spawned from one long-lived thread: `PR_SET_PDEATHSIG` fires when the
//! *thread* that forked exits, and it must fire only when the orchestrator itself dies.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

use super::run_dir::NodePaths;

/// A running (or exited, not yet reaped) `vmm`.
#[derive(Debug)]
pub struct VmmProcess {
    child: Child,
    pidfd: Arc<OwnedFd>,
    id: u64,
    status: Option<ExitStatus>,
}

struct Live {
    pidfd: Arc<OwnedFd>,
    paths: NodePaths,
}

fn live() -> MutexGuard<'static, BTreeMap<u64, Live>> {
    static LIVE: Mutex<BTreeMap<u64, Live>> = Mutex::new(BTreeMap::new());
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` on the process-wide spawner thread (see the module docs).
fn spawn_on_spawner(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        let started = std::thread::Builder::new()
            .name("kiln-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            });
        if let Err(e) = started {
            tracing::warn!(error = %e, "cannot start the spawner thread");
        }
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    sender
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("the spawner thread did not answer"))?
}

impl VmmProcess {
    /// Starts `vmm` with `args`, its stdout and stderr appended to `log`, in its own process
    /// group (a terminal's Ctrl-C reaches the orchestrator, which tears down in order), and
    /// killed by the kernel if the orchestrator dies.
    pub fn spawn(
        vmm: &Path,
        args: &[OsString],
        log: &Path,
        paths: &NodePaths,
    ) -> std::io::Result<VmmProcess> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(vmm);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of
        // the parent; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = spawn_on_spawner(cmd)?;
        let pid = Pid::from_raw(child.id() as i32).ok_or_else(|| std::io::Error::other("pid 0"))?;
        let pidfd = match pidfd_open(pid, PidfdFlags::empty()) {
            Ok(fd) => Arc::new(fd),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e.into());
            }
        };
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        live().insert(
            id,
            Live {
                pidfd: Arc::clone(&pidfd),
                paths: paths.clone(),
            },
        );
        Ok(VmmProcess {
            child,
            pidfd,
            id,
            status: None,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if it has exited (reaping it).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.status = Some(s);
                live().remove(&self.id);
            }
        }
        self.status
    }

    /// Waits up to `timeout` for the process to exit; its status if it did.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            wait_readable(&self.pidfd, left);
        }
    }

    /// Whether it has exited, without reaping it (works through `&self`).
    pub fn has_exited(&self) -> bool {
        self.status.is_some() || exited(&self.pidfd)
    }

    /// How it ended, without reaping it (through `&self`, for waits on other threads);
    /// `None` while it runs.
    pub fn peek_status(&self) -> Option<String> {
        use rustix::process::{waitid, WaitId, WaitIdOptions};
        use std::os::fd::AsFd;
        if let Some(status) = &self.status {
            return Some(status.to_string());
        }
        let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
        match waitid(WaitId::PidFd(self.pidfd.as_fd()), options) {
            Ok(Some(s)) => Some(match (s.exit_status(), s.terminating_signal()) {
                (Some(code), _) if s.exited() => format!("exit status {code}"),
                (_, Some(sig)) => format!("killed by signal {sig}"),
                _ => "ended".to_string(),
            }),
            _ => None,
        }
    }

    /// Sends `signal` (no effect once it exited).
    pub fn signal(&self, signal: Signal) {
        if self.status.is_none() {
            let _ = pidfd_send_signal(&*self.pidfd, signal);
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        self.signal(Signal::KILL);
        // SIGKILL cannot be ignored; the bound only guards against a stuck kernel.
        self.wait_timeout(Duration::from_secs(30))
    }
}

impl Drop for VmmProcess {
    fn drop(&mut self) {
        if self.try_status().is_none() && self.kill().is_none() {
            tracing::warn!(pid = self.pid(), "vmm did not die after SIGKILL");
        }
    }
}

/// Polls a pidfd (readable once the process exited) for at most `timeout`.
fn wait_readable(pidfd: &OwnedFd, timeout: Duration) {
    let ts = Timespec::try_from(timeout.min(Duration::from_secs(3600))).unwrap_or(Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    });
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    let _ = poll(&mut fds, Some(&ts));
}

/// Stops every `vmm` this process started and has not reaped: SIGTERM (vmm exits cleanly
/// and removes its sockets), then SIGKILL after `grace`, then removes leftover sockets.
/// For signal handlers and other last-resort paths; normal teardown goes through `Node`.
pub fn stop_all_registered(grace: Duration) -> Vec<PathBuf> {
    let all: Vec<(Arc<OwnedFd>, NodePaths)> = live()
        .values()
        .map(|l| (Arc::clone(&l.pidfd), l.paths.clone()))
        .collect();
    for (fd, _) in &all {
        let _ = pidfd_send_signal(&**fd, Signal::TERM);
    }
    let deadline = Instant::now() + grace;
    for (fd, _) in &all {
        let left = deadline.saturating_duration_since(Instant::now());
        if !exited(fd) && !left.is_zero() {
            wait_readable(fd, left);
        }
        if !exited(fd) {
            let _ = pidfd_send_signal(&**fd, Signal::KILL);
            wait_readable(fd, Duration::from_secs(10));
        }
    }
    let mut dirs = Vec::new();
    for (_, paths) in all {
        if let Err(e) = paths.remove_sockets() {
            tracing::warn!(error = %e, "cannot remove sockets");
        }
        dirs.push(paths.dir);
    }
    dirs
}

fn exited(pidfd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
}

/// Whether process `pid` exists and is not a zombie (an exited child nobody reaped yet).
pub fn is_live(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // `pid (comm) S ...`: the state follows the last ')'.
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace().next().map(str::to_string)
        })
        .is_some_and(|state| state != "Z" && state != "X")
}

/// Pids of live processes whose command line mentions `needle` (a run directory, say).
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .parse::<u32>()
                .ok()
                .map(|pid| (pid, e))
        })
        .filter(|(_, e)| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|cmd| cmd.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
        .map(|(pid, _)| pid)
        .filter(|pid| is_live(*pid))
        .collect()
}
