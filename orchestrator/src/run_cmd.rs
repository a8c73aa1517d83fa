//! `orchestrator run SCENARIO`: placement (here or inside the emulated KVM host), then
//! the scenario runner, the summary table and the exit status.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use orchestrator::cluster::remove_disks_and_sockets_under;
use orchestrator::runner::placement::{self, Placement};
use orchestrator::runner::{self, Progress, RunOptions};
use orchestrator::{emulated_host, vmm_binary};

use crate::cli::RunArgs;

/// Longest an emulated-host run may take before it is stopped (a hung guest must not
/// hang CI forever; the reference scenario takes well under this).
const EMULATED_RUN_LIMIT: Duration = Duration::from_secs(3 * 3600);

/// Runs the command; returns the process exit status.
pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    // Validate before building or booting anything: bad specs fail in milliseconds.
    let cluster_file = args
        .cluster
        .as_deref()
        .map(std::path::absolute)
        .transpose()
        .context("resolving --cluster")?;
    let loaded = runner::load(cluster_file.as_deref(), &args.scenario)?;
    let vmm = match &args.vmm {
        Some(p) => p.clone(),
        None => vmm_binary::locate_for_cli().map_err(anyhow::Error::msg)?,
    };
    let run_dir = match (&args.run_dir, &args.results_dir) {
        (Some(p), _) => std::path::absolute(p).context("resolving --run-dir")?,
        // Inside the emulated host: a local directory, results copied out at the end.
        (None, Some(_)) => tempfile::Builder::new()
            .prefix("kiln-run-")
            .tempdir()
            .context("creating a local run directory")?
            .keep(),
        (None, None) => {
            placement::new_run_dir(&args.scenario).context("creating the run directory")?
        }
    };
    let known: HashMap<String, PathBuf> = args.images.iter().cloned().collect();
    match placement::decide(args.host) {
        Placement::Emulated(why) => {
            eprintln!("orchestrator: {why}; running the whole run inside the emulated KVM host");
            let images = runner::prepare_images(&loaded.spec, &known)?;
            std::fs::create_dir_all(&run_dir)
                .with_context(|| format!("creating {}", run_dir.display()))?;
            let mut argv = vec![
                std::env::current_exe()
                    .context("path of the running orchestrator")?
                    .display()
                    .to_string(),
                "run".into(),
                args.scenario.clone(),
                "--host".into(),
                "kvm".into(),
                "--vmm".into(),
                vmm.display().to_string(),
                "--results-dir".into(),
                run_dir.display().to_string(),
            ];
            if let Some(file) = &cluster_file {
                argv.extend(["--cluster".into(), file.display().to_string()]);
            }
            if args.keep {
                eprintln!(
                    "orchestrator: --keep inside the emulated host keeps logs and reports only: \
                     the disks live in its memory"
                );
            }
            for (name, dir) in &images {
                argv.extend(["--image".into(), format!("{name}={}", dir.display())]);
            }
            let mut opts = emulated_host::RunOptions::new(argv)?;
            opts.cpus = placement::emulated_host_cpus();
            opts.mem_mib = placement::emulated_host_memory(&loaded.spec, &images);
            opts.timeout = Some(EMULATED_RUN_LIMIT);
            let outcome = emulated_host::run(&opts);
            // Whatever happened inside, nothing but logs and reports stays (and disks with --keep).
            if !args.keep {
                let _ = remove_disks_and_sockets_under(&run_dir);
            }
            let outcome = match outcome {
                Err(emulated_host::EmulatedHostError::Interrupted { signal }) => {
                    eprintln!("orchestrator: interrupted by signal {signal}; the emulated host and every VM in it are stopped");
                    return Ok(128 + signal);
                }
                other => other?,
            };
            eprintln!("orchestrator: logs and reports in {}", run_dir.display());
            Ok(outcome.status)
        }
        Placement::Kvm(why) => {
            let progress = Progress::new();
            progress.line(&format!("VMs run on /dev/kvm ({why})"));
            let opts = RunOptions {
                cluster_file,
                scenario: args.scenario.clone(),
                vmm,
                images: known,
                run_dir: run_dir.clone(),
                keep: args.keep,
                host: Placement::Kvm(why).describe(),
                results_dir: args.results_dir.clone(),
            };
            let report = runner::run(&opts, &progress)?;
            if let (Some(results), false) = (&args.results_dir, report.passed()) {
                // Inside the emulated host its kernel log explains VM deaths (KVM errors).
                if let Ok(out) = std::process::Command::new("dmesg").output() {
                    let _ = std::fs::write(results.join("emulated-host-dmesg.txt"), out.stdout);
                }
            }
            print!("{}", report.summary_table());
            let shown = args.results_dir.as_ref().unwrap_or(&run_dir);
            println!(
                "reports: {0}/report.json, {0}/junit.xml; serial logs: {0}/<node>/serial.log",
                shown.display()
            );
            Ok(if report.passed() { 0 } else { 1 })
        }
    }
}
