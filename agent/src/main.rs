//! `agent`: the Kiln guest agent (serve, init) and its host CLI (exec, put, get).

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Cmd};

/// Exit code for failures of the agent or the transport (not of the remote command).
const AGENT_FAILURE: u8 = 255;

fn main() -> ExitCode {
    if agent::pid1::is_pid1() {
        init_logging("info");
        // Arguments after `--` on the kernel command line reach us: honour `init ...`,
        // ignore anything else rather than refuse to boot.
        let options = match Cli::try_parse() {
            Ok(Cli {
                cmd: Cmd::Init(args),
            }) => args.into_options(),
            _ => agent::pid1::Pid1Options::default(),
        };
        agent::pid1::run(options);
    }
    let cli = Cli::parse();
    let default_level = match cli.cmd {
        Cmd::Serve(_) | Cmd::Init(_) => "info",
        _ => "warn",
    };
    init_logging(default_level);
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("agent: error: {e:#}");
            ExitCode::from(AGENT_FAILURE)
        }
    }
}

fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
