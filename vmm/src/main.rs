//! `vmm`: boot one Linux VM. See `vmm --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vmm::config::{DiskConfig, NetConfig, SerialOutput, VmConfig, VsockConfig};

/// Kiln's VMM: boots a Linux kernel on KVM with virtio block, net and vsock devices.
#[derive(Parser, Debug)]
#[command(name = "vmm", version, about)]
struct Cli {
    /// Kernel image: ELF vmlinux or bzImage.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Initramfs to load.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Kernel command line [default: "console=ttyS0 reboot=k panic=1"].
    #[arg(long, value_name = "STR")]
    cmdline: Option<String>,
    /// Guest memory in MiB [default: 256].
    #[arg(long, value_name = "MIB")]
    mem: Option<u32>,
    /// Number of vCPUs [default: 1].
    #[arg(long, value_name = "N")]
    cpus: Option<u8>,
    /// A raw disk image, read-write unless `,ro` (repeatable); `cache=writeback` gives it a
    /// volatile write cache that a power cut empties.
    #[arg(long, value_name = "PATH[,ro][,id=ID][,cache=writethrough|writeback]")]
    disk: Vec<DiskConfig>,
    /// A network device on a userspace switch socket or a TAP interface (repeatable).
    #[arg(long, value_name = "switch=SOCK[,mac=MAC]|tap=NAME[,mac=MAC]")]
    net: Vec<NetConfig>,
    /// A vsock device; host connections go through the Unix socket PATH.
    #[arg(long, value_name = "cid=N,uds=PATH")]
    vsock: Option<VsockConfig>,
    /// Serial console output: `stdout`, `off` or a file [default: stdout].
    #[arg(long, value_name = "stdout|PATH")]
    serial: Option<SerialOutput>,
    /// Control API socket (JSON lines; see API.md).
    #[arg(long, value_name = "PATH")]
    api_sock: Option<PathBuf>,
    /// Fault rules (TOML, see FAULTS.md) in force from boot; the control API changes them.
    #[arg(long, value_name = "FILE")]
    faults: Option<PathBuf>,
    /// Append every injected fault to FILE (JSON lines).
    #[arg(long, value_name = "FILE")]
    fault_log: Option<PathBuf>,
    /// Read settings from a TOML file; flags given on the command line override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Restore the snapshot in DIR instead of booting (DIR is only read). --serial,
    /// --api-sock, --disk (all, in order; each keeps its saved cache mode), --net (all, in
    /// order) and --vsock replace the saved host-side parts; the machine itself comes from the
    /// snapshot. Fault rules are not in a snapshot: --faults and --fault-log apply afresh.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["kernel", "initrd", "cmdline", "mem", "cpus", "config"])]
    restore: Option<PathBuf>,
    /// With --restore: leave the VM paused until a `resume` request.
    #[arg(long, requires = "restore")]
    paused: bool,
    /// Turn seccomp filters off (debugging only).
    #[arg(long)]
    no_seccomp: bool,
    /// Log level: error, warn, info, debug, trace [default: info, or $RUST_LOG].
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

fn build_config(cli: Cli) -> Result<VmConfig, String> {
    let mut cfg = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--config {}: {e}: check the path", path.display()))?;
            VmConfig::from_toml(&text).map_err(|e| format!("--config {}: {e}", path.display()))?
        }
        None => VmConfig::new(cli.kernel.clone().ok_or(
            "no kernel given: pass --kernel PATH (or a --config file with kernel = \"PATH\")",
        )?),
    };
    if let Some(k) = cli.kernel {
        cfg.kernel = k;
    }
    if cli.initrd.is_some() {
        cfg.initrd = cli.initrd;
    }
    if let Some(c) = cli.cmdline {
        cfg.cmdline = c;
    }
    if let Some(m) = cli.mem {
        cfg.mem_mib = m;
    }
    if let Some(c) = cli.cpus {
        cfg.cpus = c;
    }
    cfg.disks.extend(cli.disk);
    cfg.nets.extend(cli.net);
    if cli.vsock.is_some() {
        cfg.vsock = cli.vsock;
    }
    if let Some(s) = cli.serial {
        cfg.serial = s;
    }
    if cli.api_sock.is_some() {
        cfg.api_sock = cli.api_sock;
    }
    if cli.no_seccomp {
        cfg.seccomp = false;
    }
    if cli.faults.is_some() {
        cfg.faults = cli.faults;
    }
    if cli.fault_log.is_some() {
        cfg.fault_log = cli.fault_log;
    }
    Ok(cfg)
}

/// `--restore DIR` with the host-side parts given on the command line, which replace the
/// snapshot's saved ones.
fn restore_config(cli: Cli, dir: PathBuf) -> vmm::RestoreConfig {
    vmm::RestoreConfig {
        dir,
        paused: cli.paused,
        serial: cli.serial,
        api_sock: cli.api_sock,
        disks: cli.disk,
        nets: cli.net,
        vsock: cli.vsock,
        faults: cli.faults,
        fault_log: cli.fault_log,
        seccomp: !cli.no_seccomp,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = cli
        .log_level
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_target(false)
        .init();

    // Before the VM (and its API socket) exists: a SIGTERM that comes as soon as the API
    // socket appears must be handled, not kill the process with its default action.
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .map_err(|e| tracing::warn!("cannot handle SIGINT/SIGTERM: {e}"))
    .ok();
    let (seccomp, vmm) = match cli.restore.clone() {
        Some(dir) => {
            let rc = restore_config(cli, dir);
            (rc.seccomp, vmm::restore(rc))
        }
        None => match build_config(cli) {
            Ok(cfg) => (cfg.seccomp, vmm::start(cfg)),
            Err(e) => {
                eprintln!("vmm: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let vmm = match vmm {
        Ok(v) => v,
        Err(e) => {
            eprintln!("vmm: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(signals) = signals {
        stop_on_signals(signals, vmm.handle());
    }
    if seccomp {
        // Last: threads started after this would inherit the main thread's filter.
        vmm::seccomp::apply(vmm::seccomp::ThreadRole::Main);
    }
    let reason = vmm.wait();
    tracing::info!("{}", reason.describe());
    ExitCode::from(reason.exit_code() as u8)
}

/// SIGINT and SIGTERM stop the VM cleanly (sockets removed, exit 0).
fn stop_on_signals(mut signals: signal_hook::iterator::Signals, handle: vmm::VmHandle) {
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            handle.shutdown();
        }
    });
}
