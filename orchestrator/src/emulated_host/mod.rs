//! The emulated KVM host: QEMU TCG with nested SVM booting the `host` image.
//!
//! `run` boots it, loads kvm_amd nested=1, mounts the host's root read-only and
//! the working directory, the Kiln cache and the Cargo target directory
//! read-write at their own paths, runs the command there, streams its stdout
//! and stderr live (two virtio-serial ports), and returns its exit status
//! (written by the guest into the shared run directory).

pub mod qemu;
pub mod script;
pub mod shares;
pub mod streams;

use crate::cache::cache_root;
use crate::image::{self, ImageError};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Errors of `emulated-host run`.
#[derive(Debug, thiserror::Error)]
pub enum EmulatedHostError {
    /// QEMU is not installed.
    #[error("{0}: install it with `apt-get install qemu-system-x86` (or set KILN_QEMU to a qemu-system-x86_64 binary)")]
    QemuMissing(String),
    /// No command given.
    #[error("no command given: use `orchestrator emulated-host run -- CMD [ARGS...]`")]
    NoCommand,
    /// Invalid resources.
    #[error("{0}")]
    BadOption(String),
    /// Building the host image failed.
    #[error("building the emulated host image: {0}")]
    Image(#[from] ImageError),
    /// Setting up or running QEMU failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The run took longer than `--timeout`; QEMU was killed.
    #[error("the emulated host ran longer than {seconds} s and was stopped{detail}")]
    Timeout {
        /// The limit.
        seconds: u64,
        /// The end of the console.
        detail: String,
    },
    /// A signal (Ctrl-C, SIGTERM, SIGHUP) stopped the run; QEMU was stopped with it.
    #[error("interrupted by signal {signal}; the emulated host was stopped")]
    Interrupted {
        /// The signal number.
        signal: i32,
    },
    /// The guest ended without reporting the command's status.
    #[error("the emulated host stopped without running the command (QEMU {qemu_status}){detail}")]
    NoStatus {
        /// QEMU's exit status.
        qemu_status: String,
        /// QEMU's stderr and the end of the console.
        detail: String,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> EmulatedHostError {
    let context = context.into();
    move |source| EmulatedHostError::Io { context, source }
}

/// What to run and with which resources.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// vCPUs of the emulated host.
    pub cpus: u32,
    /// Memory of the emulated host in MiB.
    pub mem_mib: u32,
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// Working directory (shared read-write, the command starts there).
    pub cwd: PathBuf,
    /// Further host directories to share read-write.
    pub extra_shares: Vec<PathBuf>,
    /// Copy the serial console (kernel log, init messages) to stderr.
    pub show_console: bool,
    /// Stop QEMU after this long (none: wait for the command).
    pub timeout: Option<Duration>,
    /// Forward `127.0.0.1:<port>` here to `<addr>` inside (QEMU user network; the host
    /// gets 10.0.2.15 on its eth0 when the command sets it up). No network when `None`.
    pub forward_port: Option<(u16, String)>,
}

impl RunOptions {
    /// Defaults: 2 vCPUs, 4096 MiB, the current directory.
    pub fn new(argv: Vec<String>) -> std::io::Result<Self> {
        Ok(Self {
            cpus: 2,
            mem_mib: 4096,
            argv,
            cwd: std::env::current_dir()?,
            extra_shares: Vec::new(),
            show_console: false,
            timeout: None,
            forward_port: None,
        })
    }
}

/// How a run went.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The command's exit status (125: the guest could not start it).
    pub status: i32,
    /// Guest uptime when the command started, as the guest saw it.
    pub boot_seconds: Option<f64>,
    /// Wall time from QEMU start to its exit.
    pub qemu_wall: Duration,
    /// Wall time spent getting the image (a cache hit is fast).
    pub image_wall: Duration,
}

/// Boot the emulated host, run `opts.argv`, stream its output to this process's
/// stdout/stderr, and return its exit status.
pub fn run(opts: &RunOptions) -> Result<RunOutcome, EmulatedHostError> {
    if opts.argv.is_empty() {
        return Err(EmulatedHostError::NoCommand);
    }
    if opts.cpus == 0 || opts.cpus > 64 {
        return Err(EmulatedHostError::BadOption(format!(
            "--cpus {} is out of range: use 1..=64",
            opts.cpus
        )));
    }
    if opts.mem_mib < 256 {
        return Err(EmulatedHostError::BadOption(format!(
            "--mem {} MiB is too small: use at least 256",
            opts.mem_mib
        )));
    }
    let qemu = qemu::find_qemu()?;
    let cwd = std::fs::canonicalize(&opts.cwd)
        .map_err(io_err(format!("working directory {}", opts.cwd.display())))?;

    let image_started = Instant::now();
    let host = image::build("host")?;
    let image_wall = image_started.elapsed();

    let cache = cache_root();
    let runs = cache.join("run");
    std::fs::create_dir_all(&runs).map_err(io_err(format!("creating {}", runs.display())))?;
    let run_dir = tempfile::Builder::new()
        .prefix("host-")
        .tempdir_in(&runs)
        .map_err(io_err("creating the run directory"))?;
    // Sockets live in a short path: sun_path holds at most 107 bytes.
    let socket_dir = tempfile::Builder::new()
        .prefix("kiln-host-")
        .tempdir()
        .map_err(io_err("creating the socket directory"))?;

    let shares = shares_for(&cwd, &cache, &opts.extra_shares)?;
    let write = |name: &str, text: String| {
        let path = run_dir.path().join(name);
        std::fs::write(&path, text).map_err(io_err(format!("writing {}", path.display())))
    };
    write("mounts", shares::mounts_file(&shares))?;
    let cwd_text = cwd.to_str().ok_or_else(|| {
        EmulatedHostError::BadOption(format!("working directory {} is not UTF-8", cwd.display()))
    })?;
    write(
        "cmd.sh",
        script::command_script(cwd_text, &opts.argv, &script::passed_env()),
    )?;

    let stdout_socket = socket_dir.path().join("out");
    let stderr_socket = socket_dir.path().join("err");
    let out_pump = streams::PortPump::start(stdout_socket.clone(), std::io::stdout())
        .map_err(io_err("listening for the command's stdout"))?;
    let err_pump = streams::PortPump::start(stderr_socket.clone(), std::io::stderr())
        .map_err(io_err("listening for the command's stderr"))?;

    let cmdline = kernel_cmdline(host.cmdline(), opts.show_console);
    let plan = qemu::QemuPlan {
        cpus: opts.cpus,
        mem_mib: opts.mem_mib,
        // The ELF kernel boots ~3.5 s faster under TCG (no XZ decompression).
        kernel: &host.vmlinux().unwrap_or_else(|| host.kernel()),
        initrd: &host.initrd(),
        cmdline: &cmdline,
        run_dir: run_dir.path(),
        shares: &shares,
        stdout_socket: &stdout_socket,
        stderr_socket: &stderr_socket,
        forward_port: opts.forward_port.as_ref().map(|(p, a)| (*p, a.as_str())),
    };
    let args = qemu::qemu_args(&plan);
    tracing::debug!(qemu = %qemu.display(), ?args, "starting the emulated host");
    let qemu_started = Instant::now();
    let mut child = Command::new(&qemu)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err(format!("starting {}", qemu.display())))?;
    let console_log = run_dir.path().join("console.log");
    let log = std::fs::File::create(&console_log).map_err(io_err("creating console.log"))?;
    let console = child
        .stdout
        .take()
        .map(|out| streams::ConsolePump::start(out, log, opts.show_console));
    let qemu_stderr = child.stderr.take().map(|mut err| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut text);
            text
        })
    });
    let (qemu_status, ended) = wait_for_qemu(&mut child, opts.timeout, qemu_started)?;
    let qemu_wall = qemu_started.elapsed();
    let tail = console.map(|c| c.finish()).unwrap_or_default();
    let qemu_err = qemu_stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    out_pump
        .finish()
        .map_err(io_err("copying the command's stdout"))?;
    err_pump
        .finish()
        .map_err(io_err("copying the command's stderr"))?;

    let console_tail = |tail: &[String]| {
        if tail.is_empty() {
            String::new()
        } else {
            format!("\nlast console lines:\n{}", tail.join("\n"))
        }
    };
    if let Ended::Signal(signal) = ended {
        return Err(EmulatedHostError::Interrupted { signal });
    }
    if ended == Ended::TimedOut {
        return Err(EmulatedHostError::Timeout {
            seconds: opts.timeout.map(|t| t.as_secs()).unwrap_or(0),
            detail: console_tail(&tail),
        });
    }
    let read = |name: &str| std::fs::read_to_string(run_dir.path().join(name)).ok();
    let boot_seconds = read("boot-seconds").and_then(|s| s.trim().parse().ok());
    match read("status").and_then(|s| s.trim().parse::<i32>().ok()) {
        Some(status) => Ok(RunOutcome {
            status,
            boot_seconds,
            qemu_wall,
            image_wall,
        }),
        None => {
            let mut detail = String::new();
            if !qemu_err.trim().is_empty() {
                detail.push_str(&format!("\nQEMU said:\n{}", qemu_err.trim_end()));
            }
            detail.push_str(&console_tail(&tail));
            Err(EmulatedHostError::NoStatus {
                qemu_status: qemu_status.to_string(),
                detail,
            })
        }
    }
}

/// The directories mounted read-write: the cwd, the Kiln cache, the Cargo
/// target directory and the user's `--share`s.
fn shares_for(
    cwd: &std::path::Path,
    cache: &std::path::Path,
    extra: &[PathBuf],
) -> Result<Vec<shares::Share>, EmulatedHostError> {
    let mut wanted = vec![
        cwd.to_path_buf(),
        std::fs::canonicalize(cache).unwrap_or(cache.to_path_buf()),
    ];
    if let Some(target) = shares::target_dir(cwd) {
        wanted.extend(std::fs::canonicalize(target).ok());
    }
    for dir in extra {
        wanted.push(
            std::fs::canonicalize(dir).map_err(io_err(format!("--share {}", dir.display())))?,
        );
    }
    Ok(shares::plan_shares(&wanted))
}

/// The host kernel's command line: the image's, without `quiet` when the
/// console is shown, plus the host TSC rate (see [`qemu::host_tsc_khz`]).
fn kernel_cmdline(image_cmdline: &str, show_console: bool) -> String {
    let mut cmdline = if show_console {
        image_cmdline.replace("quiet", "")
    } else {
        image_cmdline.to_string()
    };
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if let Some(khz) = qemu::host_tsc_khz(&cpuinfo) {
        cmdline.push_str(&format!(" tsc_early_khz={khz}"));
    }
    // Extra kernel arguments for experiments and debugging.
    if let Ok(extra) = std::env::var("KILN_EMULATED_HOST_APPEND") {
        cmdline.push(' ');
        cmdline.push_str(&extra);
    }
    cmdline
}

/// How the wait for QEMU ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// QEMU exited by itself.
    Exited,
    /// The time limit passed; QEMU was killed.
    TimedOut,
    /// A signal asked this process to stop; QEMU was killed.
    Signal(i32),
}

/// Waits for QEMU, killing it when `timeout` passes or SIGINT/SIGTERM/SIGHUP arrives (the
/// caller's temporary directories are then removed on return, as on a normal exit).
fn wait_for_qemu(
    child: &mut std::process::Child,
    timeout: Option<Duration>,
    started: Instant,
) -> Result<(std::process::ExitStatus, Ended), EmulatedHostError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let caught = std::sync::Arc::new(AtomicUsize::new(0));
    let ids: Vec<_> = [SIGINT, SIGTERM, SIGHUP]
        .into_iter()
        .filter_map(|sig| {
            signal_hook::flag::register_usize(sig, std::sync::Arc::clone(&caught), sig as usize)
                .ok()
        })
        .collect();
    let mut ended = Ended::Exited;
    let result = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok((status, ended)),
            Ok(None) => {}
            Err(e) => break Err(io_err("waiting for QEMU")(e)),
        }
        if ended == Ended::Exited {
            let signal = caught.load(Ordering::Relaxed);
            if signal != 0 {
                ended = Ended::Signal(signal as i32);
            } else if timeout.is_some_and(|limit| started.elapsed() > limit) {
                ended = Ended::TimedOut;
            }
            if ended != Ended::Exited {
                let _ = child.kill();
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for id in ids {
        signal_hook::low_level::unregister(id);
    }
    result
}
