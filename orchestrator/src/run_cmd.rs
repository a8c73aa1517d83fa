//! `orchestrator run SCENARIO` and `orchestrator up`: placement (here or inside the
//! emulated KVM host), the scenario runner, the summary table and the exit status; with
//! `--keep` (always for `up`) the cluster stays up behind a control endpoint until
//! `orchestrator stop`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use orchestrator::cluster::remove_disks_and_sockets_under;
use orchestrator::hold::{self, HeldState, Listener};
use orchestrator::runner::placement::{self, Placement};
use orchestrator::runner::{self, Loaded, Progress, RunOptions};
use orchestrator::{emulated_host, vmm_binary};

use crate::cli::ClusterArgs;

/// Longest an emulated-host run may take before it is stopped (a hung guest must not
/// hang CI forever; the reference scenario takes well under this). Held clusters
/// (`--keep`, `up`) have no limit.
const EMULATED_RUN_LIMIT: Duration = Duration::from_secs(3 * 3600);

/// The address the control endpoint listens on inside the emulated host (QEMU's user
/// network gives the host 10.0.2.15 and forwards a local port to it).
const EMULATED_CONTROL: &str = "10.0.2.15:7070";

/// Runs `run SCENARIO` (or, with `scenario` absent, `up`: a boot-only scenario, kept);
/// returns the exit status.
pub fn run(scenario: Option<&str>, keep: bool, args: ClusterArgs) -> anyhow::Result<i32> {
    let up = scenario.is_none();
    // Validate before building or booting anything: bad specs fail in milliseconds.
    let cluster_file = args
        .cluster
        .as_deref()
        .map(std::path::absolute)
        .transpose()
        .context("resolving --cluster")?;
    let loaded = runner::load(cluster_file.as_deref(), scenario)?;
    let keep = keep || up;
    let vmm = match &args.vmm {
        Some(p) => p.clone(),
        None => vmm_binary::locate_for_cli().map_err(anyhow::Error::msg)?,
    };
    let name = scenario.unwrap_or("up");
    let run_dir = match (&args.run_dir, &args.results_dir) {
        (Some(p), _) => std::path::absolute(p).context("resolving --run-dir")?,
        // Inside the emulated host: a local directory, results copied out at the end.
        (None, Some(_)) => tempfile::Builder::new()
            .prefix("kiln-run-")
            .tempdir()
            .context("creating a local run directory")?
            .keep(),
        (None, None) => placement::new_run_dir(name).context("creating the run directory")?,
    };
    let known: HashMap<String, PathBuf> = args.images.iter().cloned().collect();
    match placement::decide(args.host) {
        Placement::Emulated(why) => {
            eprintln!("orchestrator: {why}; running the whole run inside the emulated KVM host");
            emulated(scenario, keep, &loaded, cluster_file, vmm, run_dir, &known)
        }
        Placement::Kvm(why) => {
            let progress = Progress::new();
            progress.line(&format!("VMs run on /dev/kvm ({why})"));
            let opts = RunOptions {
                cluster_file,
                scenario: loaded.scenario.name.clone(),
                vmm,
                images: known,
                run_dir: run_dir.clone(),
                host: Placement::Kvm(why).describe(),
                results_dir: args.results_dir.clone(),
            };
            let finished = runner::run_loaded(&opts, loaded, &progress)?;
            let report = finished.report;
            // `up` whose boot failed has nothing worth keeping: say why and clean up.
            let boot_failed = up && !report.passed();
            if !up || boot_failed {
                print!("{}", report.summary_table());
                println!(
                    "reports: {0}/report.json, {0}/junit.xml; serial logs: {0}/<node>/serial.log",
                    args.results_dir.as_ref().unwrap_or(&run_dir).display()
                );
            }
            if let (Some(results), false) = (&args.results_dir, report.passed()) {
                // Inside the emulated host its kernel log explains VM deaths (KVM errors).
                if let Ok(out) = std::process::Command::new("dmesg").output() {
                    let _ = std::fs::write(results.join("emulated-host-dmesg.txt"), out.stdout);
                }
            }
            let status = if report.passed() { 0 } else { 1 };
            if keep && !boot_failed {
                hold_cluster(finished.cluster, &run_dir, args.listen_tcp.as_deref())?;
                runner::finish_results(&opts)?;
            } else {
                runner::finish(finished.cluster, &opts)?;
            }
            Ok(status)
        }
    }
}

/// Keeps the cluster up behind its control endpoint until `orchestrator stop`.
fn hold_cluster(
    cluster: orchestrator::cluster::Cluster,
    run_dir: &std::path::Path,
    listen_tcp: Option<&str>,
) -> anyhow::Result<()> {
    let listener = match listen_tcp {
        // Inside the emulated host: the outer orchestrator wrote cluster.json.
        Some(addr) => {
            bring_up_emulated_host_network()?;
            let l = std::net::TcpListener::bind(addr)
                .with_context(|| format!("listening on {addr}"))?;
            Listener::Tcp(l)
        }
        None => {
            let path = run_dir.join("control.sock");
            let l = std::os::unix::net::UnixListener::bind(&path)
                .with_context(|| format!("listening on {}", path.display()))?;
            HeldState {
                pid: std::process::id(),
                control: format!("unix:{}", path.display()),
                nodes: cluster
                    .nodes()
                    .iter()
                    .map(|n| n.name().to_string())
                    .collect(),
            }
            .write(run_dir)
            .context("writing cluster.json")?;
            Listener::Unix(l)
        }
    };
    eprintln!(
        "orchestrator: cluster is up ({} nodes); from another terminal: orchestrator status | \
         logs NODE | exec NODE -- CMD | stop",
        cluster.nodes().len()
    );
    hold::serve(cluster, listener)?;
    let _ = std::fs::remove_file(run_dir.join(hold::STATE_FILE));
    eprintln!("orchestrator: cluster stopped");
    Ok(())
}

/// Gives the emulated host's NIC (QEMU user network) its fixed address.
fn bring_up_emulated_host_network() -> anyhow::Result<()> {
    let ip = "10.0.2.15/24".parse().map_err(anyhow::Error::msg)?;
    agent::pid1::net::configure("eth0", ip).context("configuring eth0 of the emulated host")
}

/// The whole run moves into the emulated KVM host; this side prepares images and the
/// `vmm`, owns the run directory and, for held clusters, the forwarded control port.
#[allow(clippy::too_many_arguments)]
fn emulated(
    scenario: Option<&str>,
    keep: bool,
    loaded: &Loaded,
    cluster_file: Option<PathBuf>,
    vmm: PathBuf,
    run_dir: PathBuf,
    known: &HashMap<String, PathBuf>,
) -> anyhow::Result<i32> {
    let started = std::time::Instant::now();
    let images = runner::prepare_images(&loaded.spec, known)?;
    eprintln!(
        "orchestrator: images ready in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        images
            .values()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let exe = std::env::current_exe().context("path of the running orchestrator")?;
    // Rebuilt while this ran: Linux names the old file "... (deleted)"; the new one is at
    // the plain path.
    let exe = exe.display().to_string();
    let mut argv = vec![exe.strip_suffix(" (deleted)").unwrap_or(&exe).to_string()];
    match scenario {
        None => argv.push("up".into()),
        Some(name) => argv.extend(["run".into(), name.to_string()]),
    }
    argv.extend([
        "--host".into(),
        "kvm".into(),
        "--vmm".into(),
        vmm.display().to_string(),
        "--results-dir".into(),
        run_dir.display().to_string(),
    ]);
    if let Some(file) = &cluster_file {
        argv.extend(["--cluster".into(), file.display().to_string()]);
    }
    for (name, dir) in &images {
        argv.extend(["--image".into(), format!("{name}={}", dir.display())]);
    }
    let mut opts = emulated_host::RunOptions::new(argv.clone())?;
    // The spec (and files its steps copy) and the run directory at the same paths inside.
    opts.extra_shares.push(run_dir.clone());
    if let Some(dir) = cluster_file.as_deref().and_then(std::path::Path::parent) {
        opts.extra_shares.push(dir.to_path_buf());
    }
    opts.cpus = placement::emulated_host_cpus();
    opts.mem_mib = placement::emulated_host_memory(&loaded.spec, &images);
    opts.timeout = (!keep).then_some(EMULATED_RUN_LIMIT);
    if keep {
        let port = free_local_port()?;
        opts.forward_port = Some((port, EMULATED_CONTROL.to_string()));
        if scenario.is_some() {
            opts.argv.push("--keep".into());
        }
        opts.argv
            .extend(["--listen-tcp".into(), EMULATED_CONTROL.into()]);
        HeldState {
            pid: std::process::id(),
            control: format!("tcp:127.0.0.1:{port}"),
            nodes: loaded.spec.nodes.iter().map(|n| n.name.clone()).collect(),
        }
        .write(&run_dir)
        .context("writing cluster.json")?;
    }
    let outcome = emulated_host::run(&opts);
    // Whatever happened inside, only logs and reports stay.
    let _ = std::fs::remove_file(run_dir.join(hold::STATE_FILE));
    let _ = remove_disks_and_sockets_under(&run_dir);
    let outcome = match outcome {
        Err(emulated_host::EmulatedHostError::Interrupted { signal }) => {
            eprintln!(
                "orchestrator: interrupted by signal {signal}; the emulated host and every VM in it are stopped"
            );
            return Ok(128 + signal);
        }
        other => other?,
    };
    eprintln!("orchestrator: logs and reports in {}", run_dir.display());
    Ok(outcome.status)
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
fn free_local_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free local port")?;
    Ok(l.local_addr()?.port())
}
