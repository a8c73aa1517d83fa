//! Command-line interface of the `orchestrator` binary.

use clap::{Parser, Subcommand};
use orchestrator::runner::placement::HostChoice;
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
    /// Run a scenario: build or reuse images, boot the cluster, run the steps, report.
    Run(RunArgs),
    /// Boot a cluster and keep it up (until `orchestrator stop`).
    Up(UpArgs),
    /// Show the nodes of a running cluster.
    Status(Target),
    /// Print a node's serial console log.
    Logs {
        /// Node name.
        node: String,
        #[command(flatten)]
        target: Target,
    },
    /// Run a command in a node through its agent (stdout and stderr apart, its exit status).
    Exec {
        /// Node name.
        node: String,
        #[command(flatten)]
        target: Target,
        /// The command and its arguments (after `--`), run through `/bin/sh -c`.
        #[arg(required = true, last = true, value_name = "CMD")]
        argv: Vec<String>,
    },
    /// Stop a running cluster (every VM, switch and socket).
    Stop(Target),
    /// Remove what stopped runs left: disk images and sockets; with --all, whole run
    /// directories of runs that are not running.
    Clean {
        /// Remove the logs and reports of finished runs too.
        #[arg(long)]
        all: bool,
    },
    /// Validate a cluster spec, its boot order and image names without booting anything.
    Check {
        /// Cluster spec (TOML); the built-in reference cluster when absent.
        #[arg(long, value_name = "FILE")]
        cluster: Option<PathBuf>,
    },
}

/// `orchestrator run SCENARIO ...`
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Scenario name from the cluster spec (`fresh-smoke` in the reference cluster).
    pub scenario: String,
    /// Leave the cluster running after the scenario, for `status`, `logs`, `exec` and
    /// `stop` from another terminal.
    #[arg(long)]
    pub keep: bool,
    #[command(flatten)]
    pub common: ClusterArgs,
}

/// `orchestrator up ...`
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub common: ClusterArgs,
}

/// What `run` and `up` share.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Cluster spec (TOML); the built-in reference cluster when absent.
    #[arg(long, value_name = "FILE")]
    pub cluster: Option<PathBuf>,
    /// Where the VMs run: `auto` picks `kvm` when /dev/kvm can boot stock Linux, else the
    /// emulated KVM host.
    #[arg(long, value_enum, default_value_t = HostChoice::Auto)]
    pub host: HostChoice,
    /// Use this run directory (must be new or empty) instead of `<cache>/run/<name>-<time>`.
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Run in a local temporary directory and copy logs and reports here at the end
    /// (what the run does inside the emulated host, whose shares cannot hold sockets).
    #[arg(long, value_name = "DIR", hide = true, conflicts_with = "run_dir")]
    pub results_dir: Option<PathBuf>,
    /// Serve the control endpoint of a kept cluster on this TCP address (inside the
    /// emulated host, where QEMU forwards a local port to it).
    #[arg(long, value_name = "ADDR", hide = true)]
    pub listen_tcp: Option<String>,
    /// The vmm binary (default: $KILN_VMM, or built from this workspace).
    #[arg(long, value_name = "PATH")]
    pub vmm: Option<PathBuf>,
    /// An image directory already built, as NAME=DIR (repeatable; used inside the
    /// emulated host, where the images were prepared outside).
    #[arg(long = "image", value_name = "NAME=DIR", value_parser = parse_image, hide = true)]
    pub images: Vec<(String, PathBuf)>,
}

/// Which held cluster a command talks to.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// Run directory of the cluster (default: the latest run).
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
}

fn parse_image(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((name, dir)) if !name.is_empty() && !dir.is_empty() => {
            Ok((name.to_string(), PathBuf::from(dir)))
        }
        _ => Err(format!("{text:?}: expected NAME=DIR")),
    }
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
    fn run_parses_scenario_host_and_images() {
        let cli = parse(&[
            "run",
            "fresh-smoke",
            "--host",
            "emulated",
            "--keep",
            "--image",
            "debian-node=/c/img",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(args.scenario, "fresh-smoke");
        assert_eq!(args.common.host, HostChoice::Emulated);
        assert!(args.keep);
        assert_eq!(
            args.common.images,
            [("debian-node".to_string(), PathBuf::from("/c/img"))]
        );
        let bad = parse(&["run", "x", "--host", "cloud"]).unwrap_err();
        assert_eq!(bad.kind(), ErrorKind::InvalidValue);
        let bad = parse(&["run", "x", "--image", "nodir"]).unwrap_err();
        assert_eq!(bad.kind(), ErrorKind::ValueValidation);
        let none = parse(&["run"]).unwrap_err();
        assert_eq!(none.kind(), ErrorKind::MissingRequiredArgument);
        let Command::Exec { node, argv, .. } =
            parse(&["exec", "node01", "--", "etcdctl", "get", "k"])
                .unwrap()
                .command
        else {
            panic!("wrong command");
        };
        assert_eq!((node.as_str(), argv.len()), ("node01", 3));
        let no_cmd = parse(&["exec", "node01"]).unwrap_err();
        assert_eq!(no_cmd.kind(), ErrorKind::MissingRequiredArgument);
        assert!(matches!(parse(&["up"]).unwrap().command, Command::Up(_)));
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
