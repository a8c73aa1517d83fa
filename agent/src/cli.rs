//! Command-line interface of the `agent` binary.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use agent::client::ExecEvent;
use agent::pid1::{self, Pid1Options};
use agent::protocol::{ExecRequest, DEFAULT_VSOCK_PORT};
use agent::server::{self, PowerAction, ServerOptions};
use agent::Client;

/// Kiln guest agent and host client.
#[derive(Parser)]
#[command(name = "agent", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Serve requests: over vsock in a guest, or over a Unix socket in test mode.
    Serve(ServeArgs),
    /// PID 1 mode (chosen automatically when the kernel starts the agent as init).
    Init(InitArgs),
    /// Run a command in the guest; prints its output as it comes, exits with its code.
    Exec(ExecArgs),
    /// Copy a local file into the guest.
    Put(PutArgs),
    /// Copy a guest file to the host.
    Get(GetArgs),
    /// Set a static IPv4 address and bring the link up (what init does for kiln.ip=).
    /// With --from-cmdline: apply kiln.hostname=, kiln.ip= and kiln.iface= from
    /// /proc/cmdline (the node image's kiln-net.service under systemd).
    #[command(hide = true)]
    NetSetup {
        /// Interface name.
        #[arg(long, required_unless_present = "from_cmdline")]
        iface: Option<String>,
        /// ADDR/PREFIX.
        #[arg(long, required_unless_present = "from_cmdline")]
        ip: Option<pid1::cmdline::IpConfig>,
        /// Take hostname, address and interface from the kernel command line instead.
        #[arg(long, conflicts_with_all = ["iface", "ip"])]
        from_cmdline: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum PowerArg {
    /// reboot(2) after sync (PID 1).
    Syscall,
    /// systemctl poweroff/reboot (systemd service).
    Systemctl,
    /// Exit the agent with status 0 (test mode).
    Exit,
}

#[derive(Args)]
#[group(required = true, multiple = false, id = "listen")]
pub struct Listen {
    /// Listen on this Unix socket (test mode).
    #[arg(long)]
    unix: Option<PathBuf>,
    /// Listen on this vsock port (default 10700 when given without a value).
    #[arg(long, num_args = 0..=1, default_missing_value = "10700", value_name = "PORT")]
    vsock: Option<u32>,
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    listen: Listen,
    /// What poweroff/reboot requests do [default: exit with --unix, systemctl with --vsock].
    #[arg(long, value_enum)]
    power_action: Option<PowerArg>,
    /// After binding, announce readiness to the host on this vsock port (vsock only).
    #[arg(long, value_name = "PORT")]
    announce_port: Option<u32>,
    /// Reap orphaned descendants (prctl PR_SET_CHILD_SUBREAPER), as PID 1 does.
    #[arg(long)]
    subreaper: bool,
}

#[derive(Args)]
pub struct InitArgs {
    /// Module list file [default: /etc/kiln/modules, skipped if absent].
    #[arg(long)]
    modules_file: Option<PathBuf>,
    /// A module (name or .ko path, with optional params) to load; repeatable.
    #[arg(long = "module")]
    modules: Vec<String>,
    /// Read kiln.* parameters from this file instead of /proc/cmdline (tests).
    #[arg(long)]
    cmdline_file: Option<PathBuf>,
    /// Serve on this Unix socket instead of vsock (tests in a PID namespace).
    #[arg(long)]
    unix: Option<PathBuf>,
}

impl InitArgs {
    /// The PID 1 options these arguments ask for.
    pub fn into_options(self) -> Pid1Options {
        Pid1Options {
            modules_file: self.modules_file,
            modules: self.modules,
            cmdline_file: self.cmdline_file,
            unix: self.unix,
        }
    }
}

#[derive(Args)]
#[group(required = true, multiple = false, id = "target")]
pub struct Target {
    /// The agent's Unix socket (test mode).
    #[arg(long)]
    unix: Option<PathBuf>,
    /// The VMM's vsock Unix socket, with the agent's port (default 10700).
    #[arg(long, value_name = "PATH[:PORT]")]
    vsock_uds: Option<String>,
}

impl Target {
    async fn connect(&self) -> Result<Client> {
        if let Some(path) = &self.unix {
            return Client::connect_unix(path)
                .await
                .with_context(|| format!("connecting to {}", path.display()));
        }
        let spec = self.vsock_uds.as_deref().unwrap_or_default();
        let (path, port) = split_port(spec)?;
        Client::connect_vsock_uds(path, port)
            .await
            .with_context(|| format!("connecting to {path} port {port}"))
    }
}

/// Splits `PATH[:PORT]`; a suffix that is not a number belongs to the path.
fn split_port(spec: &str) -> Result<(&str, u32)> {
    match spec.rsplit_once(':') {
        Some((path, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            let port = port
                .parse()
                .with_context(|| format!("--vsock-uds {spec}: port out of range"))?;
            Ok((path, port))
        }
        _ => Ok((spec, DEFAULT_VSOCK_PORT)),
    }
}

#[derive(Args)]
pub struct ExecArgs {
    #[command(flatten)]
    target: Target,
    /// Run the words after `--` as one `/bin/sh -c` string.
    #[arg(long)]
    shell: bool,
    /// Set an environment variable (KEY=VALUE); repeatable.
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Start from an empty environment.
    #[arg(long)]
    clear_env: bool,
    /// Working directory in the guest.
    #[arg(long)]
    cwd: Option<String>,
    /// Kill the command's process group after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Forward this process's stdin to the command.
    #[arg(long)]
    stdin: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    cmd: Vec<String>,
}

#[derive(Args)]
pub struct PutArgs {
    #[command(flatten)]
    target: Target,
    /// Permission bits, octal.
    #[arg(long, default_value = "644")]
    mode: String,
    /// Local file.
    local: PathBuf,
    /// Guest path.
    remote: String,
}

#[derive(Args)]
pub struct GetArgs {
    #[command(flatten)]
    target: Target,
    /// Guest path.
    remote: String,
    /// Local file.
    local: PathBuf,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Init(_) => bail!(
            "`agent init` runs only as PID 1 (the kernel's init=); on a running system use `agent serve`"
        ),
        Cmd::NetSetup {
            iface,
            ip,
            from_cmdline,
        } => {
            let boot = if from_cmdline {
                let text = std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
                pid1::cmdline::parse_cmdline(&text)
                    .map_err(|e| anyhow::anyhow!("kernel command line: {e}"))?
            } else {
                pid1::cmdline::BootConfig {
                    ip,
                    iface: iface.unwrap_or_default(),
                    ..Default::default()
                }
            };
            if let Some(name) = &boot.hostname {
                pid1::net::set_hostname(name).with_context(|| format!("setting hostname {name}"))?;
            }
            if let Some(ip) = boot.ip {
                pid1::net::configure(&boot.iface, ip)
                    .with_context(|| format!("configuring {}", boot.iface))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        // One event-loop thread: the agent is I/O-bound, and this measured ~30% faster exec
        // round trips than the multi-threaded runtime (benches/exec_latency.rs); file
        // I/O still goes to tokio's blocking pool.
        cmd => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(run_async(cmd)),
    }
}

async fn run_async(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Serve(args) => serve(args).await,
        Cmd::Exec(args) => exec(args).await,
        Cmd::Put(args) => {
            let mode = u32::from_str_radix(&args.mode, 8)
                .with_context(|| format!("--mode {}: expected octal bits like 644", args.mode))?;
            let client = args.target.connect().await?;
            let size = client
                .put_file(&args.local, &args.remote, mode)
                .await
                .with_context(|| format!("put {} -> {}", args.local.display(), args.remote))?;
            tracing::info!(size, "put done");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Get(args) => {
            let client = args.target.connect().await?;
            client
                .get_file(&args.remote, &args.local)
                .await
                .with_context(|| format!("get {} -> {}", args.remote, args.local.display()))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Init(_) | Cmd::NetSetup { .. } => bail!("not an async command"),
    }
}

async fn serve(args: ServeArgs) -> Result<ExitCode> {
    if args.subreaper {
        pid1::reaper::become_subreaper().context("prctl(PR_SET_CHILD_SUBREAPER)")?;
        pid1::reaper::spawn_reaper().context("installing the SIGCHLD handler")?;
    }
    let power = match (args.power_action, args.listen.unix.is_some()) {
        (Some(PowerArg::Syscall), _) => PowerAction::Syscall,
        (Some(PowerArg::Systemctl), _) => PowerAction::Systemctl,
        (Some(PowerArg::Exit), _) | (None, true) => PowerAction::Exit,
        (None, false) => PowerAction::Systemctl,
    };
    let options = ServerOptions { power };
    if let Some(path) = &args.listen.unix {
        server::serve_unix(path, options)
            .await
            .with_context(|| format!("serving on {}", path.display()))?;
    } else {
        let port = args.listen.vsock.unwrap_or(DEFAULT_VSOCK_PORT);
        server::vsock::serve_vsock(port, options, args.announce_port)
            .await
            .with_context(|| format!("serving on vsock port {port}"))?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn exec(args: ExecArgs) -> Result<ExitCode> {
    let mut req = if args.shell {
        ExecRequest::shell(args.cmd.join(" "))
    } else {
        ExecRequest::argv(args.cmd.clone())
    };
    for kv in &args.env {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--env {kv}: expected KEY=VALUE");
        };
        req = req.env(k, v);
    }
    if args.clear_env {
        req = req.clear_env();
    }
    if let Some(cwd) = args.cwd {
        req = req.cwd(cwd);
    }
    if let Some(secs) = args.timeout {
        let timeout = Duration::try_from_secs_f64(secs)
            .with_context(|| format!("--timeout {secs}: expected a positive number of seconds"))?;
        req = req.timeout(timeout);
    }
    if args.stdin {
        req = req.with_stdin();
    }

    let client = args.target.connect().await?;
    let mut running = client.exec(req).await.context("starting the command")?;
    if let Some(mut remote_stdin) = running.take_stdin() {
        tokio::spawn(async move {
            let mut local = tokio::io::stdin();
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = local.read(&mut buf).await {
                if n == 0 || remote_stdin.write(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = remote_stdin.close().await;
        });
    }
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    while let Some(event) = running.next_event().await? {
        match event {
            ExecEvent::Stdout(data) => {
                stdout.write_all(&data).await?;
                stdout.flush().await?;
            }
            ExecEvent::Stderr(data) => {
                stderr.write_all(&data).await?;
                stderr.flush().await?;
            }
            ExecEvent::Exited { status, timed_out } => {
                if timed_out {
                    eprintln!("agent: command killed after its timeout");
                }
                let code = status.shell_code().clamp(0, 255) as u8;
                return Ok(ExitCode::from(code));
            }
        }
    }
    bail!("connection closed before the command exited")
}

#[cfg(test)]
mod tests {
    use super::split_port;

    #[test]
    fn splits_optional_port() {
        assert_eq!(split_port("/run/v.sock:52").unwrap(), ("/run/v.sock", 52));
        assert_eq!(split_port("/run/v.sock").unwrap(), ("/run/v.sock", 10_700));
        assert_eq!(split_port("/odd:name/v").unwrap(), ("/odd:name/v", 10_700));
        assert!(split_port("/v:99999999999").is_err());
    }
}
