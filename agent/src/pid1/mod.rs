//! PID 1 mode for the minimal image: early mounts, modules, hostname and static IP from
//! the kernel command line, zombie reaping, then the vsock server. Never returns: on a
//! fatal error it syncs and powers the machine off.

pub mod cmdline;
pub mod modules;
pub mod mounts;
pub mod net;
pub mod reaper;

use std::path::{Path, PathBuf};

use crate::server::{vsock, PowerAction, ServerOptions};

/// Default module list file in the image.
pub const DEFAULT_MODULES_FILE: &str = "/etc/kiln/modules";

/// Options of `agent init` (all optional; PID 1 started by the kernel gets none).
#[derive(Debug, Clone, Default)]
pub struct Pid1Options {
    /// Module list file; [`DEFAULT_MODULES_FILE`] when `None` (skipped if absent).
    pub modules_file: Option<PathBuf>,
    /// Extra modules, loaded after the file's and before `kiln.modules=`.
    pub modules: Vec<String>,
    /// Read the `kiln.*` parameters from this file instead of `/proc/cmdline`.
    pub cmdline_file: Option<PathBuf>,
    /// Serve on this Unix socket instead of vsock (tests in a PID namespace).
    pub unix: Option<PathBuf>,
}

/// Runs the whole PID 1 sequence and serves forever.
pub fn run(options: Pid1Options) -> ! {
    mounts::mount_early();
    let cmdline_file = options
        .cmdline_file
        .clone()
        .unwrap_or_else(|| PathBuf::from("/proc/cmdline"));
    let cmdline = std::fs::read_to_string(&cmdline_file).unwrap_or_default();
    let boot = match cmdline::parse_cmdline(&cmdline) {
        Ok(boot) => boot,
        Err(e) => {
            tracing::error!(error = %e, "bad kiln.* parameter on the kernel command line; using defaults");
            cmdline::BootConfig::default()
        }
    };

    let mut specs = Vec::new();
    let file = options
        .modules_file
        .unwrap_or_else(|| PathBuf::from(DEFAULT_MODULES_FILE));
    match std::fs::read_to_string(&file) {
        Ok(text) => specs.extend(modules::parse_module_list(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(file = %file.display(), error = %e, "cannot read module list"),
    }
    specs.extend(modules::parse_module_list(&options.modules.join("\n")));
    specs.extend(modules::parse_module_list(&boot.modules.join("\n")));
    modules::load_all(&specs, &modules::running_modules_dir());

    if let Some(name) = &boot.hostname {
        if let Err(e) = net::set_hostname(name) {
            tracing::warn!(hostname = %name, error = %e, "cannot set hostname");
        }
    }
    if let Some(ip) = boot.ip {
        if let Err(e) = net::configure(&boot.iface, ip) {
            tracing::warn!(iface = %boot.iface, error = %e, "cannot configure network");
        }
    }

    // Single event-loop thread, as for `agent serve` (see cli.rs).
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|rt| rt.block_on(serve(&boot, options.unix.as_deref())));
    if let Err(e) = result {
        tracing::error!(error = %e, "agent cannot serve; powering off");
    }
    let err = crate::server::system::power_syscall(false);
    tracing::error!(error = %err, "poweroff failed; halting in a sleep loop");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

async fn serve(boot: &cmdline::BootConfig, unix: Option<&Path>) -> std::io::Result<()> {
    reaper::spawn_reaper()?;
    let options = ServerOptions {
        power: PowerAction::Syscall,
    };
    if let Some(path) = unix {
        return crate::server::serve_unix(path, options).await;
    }
    let announce = (boot.announce_port != 0).then_some(boot.announce_port);
    vsock::serve_vsock(boot.port, options, announce).await
}

/// Whether the agent was started by the kernel as init.
pub fn is_pid1() -> bool {
    std::process::id() == 1
}
