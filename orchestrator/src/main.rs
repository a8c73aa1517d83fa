//! `orchestrator`: Kiln's command-line entry point.

mod cli;
mod cluster_cmd;
mod run_cmd;

use anyhow::Context;
use clap::Parser;
use cli::{Cli, Command, EmulatedHostCommand, ImageCommand};
use orchestrator::{emulated_host, host_kind, image};

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::exit(1);
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Image(ImageCommand::Build { name }) => {
            let started = std::time::Instant::now();
            let built = image::build(&name)?;
            tracing::info!(
                cache_hit = built.cache_hit,
                seconds = started.elapsed().as_secs_f64(),
                "image ready"
            );
            println!("{}", built.path.display());
            Ok(0)
        }
        Command::Image(ImageCommand::List) => {
            for name in image::names() {
                let recipe = image::recipe::Recipe::load(name)?;
                println!("{name}\t{}", recipe.spec.description);
            }
            Ok(0)
        }
        Command::EmulatedHost(EmulatedHostCommand::Run {
            cpus,
            mem_mib,
            shares,
            console,
            timeout,
            timings,
            argv,
        }) => {
            let started = std::time::Instant::now();
            let mut opts =
                emulated_host::RunOptions::new(argv).context("reading the current directory")?;
            opts.cpus = cpus;
            opts.mem_mib = mem_mib;
            opts.extra_shares = shares;
            opts.show_console = console;
            opts.timeout = timeout.map(std::time::Duration::from_secs);
            let outcome = emulated_host::run(&opts)?;
            if timings {
                let boot = outcome
                    .boot_seconds
                    .map(|s| format!("{s:.2}s"))
                    .unwrap_or_else(|| "?".into());
                eprintln!(
                    "kiln timings: image {:.2}s, guest boot-to-command {boot}, qemu {:.2}s, total {:.2}s",
                    outcome.image_wall.as_secs_f64(),
                    outcome.qemu_wall.as_secs_f64(),
                    started.elapsed().as_secs_f64()
                );
            }
            Ok(outcome.status)
        }
        Command::Run(args) => run_cmd::run(Some(&args.scenario), args.keep, args.common),
        Command::Up(args) => run_cmd::run(None, true, args.common),
        Command::Status(t) => cluster_cmd::status(t.run_dir.as_deref()),
        Command::Logs { node, target } => cluster_cmd::logs(&node, target.run_dir.as_deref()),
        Command::Exec { node, target, argv } => {
            cluster_cmd::exec(&node, &argv, target.run_dir.as_deref())
        }
        Command::Stop(t) => cluster_cmd::stop(t.run_dir.as_deref()),
        Command::Clean { all } => cluster_cmd::clean(all),
        Command::Check { cluster } => match orchestrator::check::check(cluster.as_deref()) {
            Ok(report) => {
                print!("{report}");
                Ok(0)
            }
            Err(problems) => {
                eprintln!("{problems}");
                Ok(1)
            }
        },
        Command::HostInfo => {
            let kind = host_kind::kvm_can_boot_linux();
            let label = match &kind {
                host_kind::HostKind::HardwareKvm { .. } => "hardware-kvm",
                host_kind::HostKind::Pvm { .. } => "pvm",
                host_kind::HostKind::NoKvm { .. } => "no-kvm",
            };
            println!("{label}: {}", kind.reason());
            println!(
                "pace: {}",
                orchestrator::runner::pace::Pace::measure().describe()
            );
            println!(
                "stock Linux guests: {}",
                if kind.can_boot_linux() {
                    "boot directly on /dev/kvm"
                } else {
                    "use `orchestrator emulated-host run`"
                }
            );
            Ok(0)
        }
    }
}
