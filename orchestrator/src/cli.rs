//! Command-line interface of the `orchestrator` binary.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Kiln test orchestrator.
#[derive(Debug, Parser)]
#[command(name = "orchestrator", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build and list guest images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Run commands inside the emulated KVM host (QEMU TCG + nested SVM).
    #[command(subcommand, name = "emulated-host")]
    EmulatedHost(EmulatedHostCommand),
    /// Say whether /dev/kvm here can boot stock Linux guests, and why.
    HostInfo,
    /// Validate a cluster spec, its boot order and image names without booting anything.
    Check {
        /// Cluster spec (TOML); the built-in reference cluster when absent.
        #[arg(long, value_name = "FILE")]
        cluster: Option<PathBuf>,
    },
}

/// `orchestrator image ...`
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build an image (or find it in the cache) and print its directory.
    Build {
        /// Image name (see `orchestrator image list`).
        name: String,
    },
    /// List the images that can be built.
    List,
}

/// `orchestrator emulated-host ...`
#[derive(Debug, Subcommand)]
pub enum EmulatedHostCommand {
    /// Boot the emulated host, run CMD in the current directory, exit with its status.
    Run {
        /// vCPUs of the emulated host.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
        cpus: u32,
        /// Memory of the emulated host, MiB.
        #[arg(long = "mem", value_name = "MIB", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(256..))]
        mem_mib: u32,
        /// Extra host directory to mount read-write at the same path (repeatable).
        #[arg(long = "share", value_name = "DIR")]
        shares: Vec<PathBuf>,
        /// Copy the emulated host's serial console to stderr.
        #[arg(long)]
        console: bool,
        /// Stop the emulated host after this many seconds (default: no limit).
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        timeout: Option<u64>,
        /// Print timings (image, boot-to-command, total) to stderr at the end.
        #[arg(long)]
        timings: bool,
        /// The command and its arguments (after `--`).
        #[arg(required = true, last = true, value_name = "CMD")]
        argv: Vec<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("orchestrator").chain(args.iter().copied()))
    }

    #[test]
    fn run_takes_command_after_double_dash() {
        let cli = parse(&[
            "emulated-host",
            "run",
            "--cpus",
            "1",
            "--mem",
            "2048",
            "--",
            "sh",
            "-c",
            "exit 7",
        ])
        .unwrap();
        let Command::EmulatedHost(EmulatedHostCommand::Run {
            cpus,
            mem_mib,
            argv,
            ..
        }) = cli.command
        else {
            panic!("wrong command");
        };
        assert_eq!((cpus, mem_mib), (1, 2048));
        assert_eq!(argv, ["sh", "-c", "exit 7"]);
    }

    #[test]
    fn bad_input_is_rejected() {
        let missing = parse(&["emulated-host", "run"]).unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::MissingRequiredArgument);
        let zero = parse(&["emulated-host", "run", "--cpus", "0", "--", "true"]).unwrap_err();
        assert_eq!(zero.kind(), ErrorKind::ValueValidation);
        let tiny = parse(&["emulated-host", "run", "--mem", "12", "--", "true"]).unwrap_err();
        assert_eq!(tiny.kind(), ErrorKind::ValueValidation);
        let no_name = parse(&["image", "build"]).unwrap_err();
        assert_eq!(no_name.kind(), ErrorKind::MissingRequiredArgument);
        let unknown = parse(&["image", "frobnicate"]).unwrap_err();
        assert_eq!(unknown.kind(), ErrorKind::InvalidSubcommand);
    }

    #[test]
    fn image_build_and_host_info_parse() {
        let cli = parse(&["image", "build", "debian-minimal"]).unwrap();
        assert!(
            matches!(cli.command, Command::Image(ImageCommand::Build { name }) if name == "debian-minimal")
        );
        assert!(matches!(
            parse(&["host-info"]).unwrap().command,
            Command::HostInfo
        ));
    }
}
