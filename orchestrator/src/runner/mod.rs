//! The scenario runner behind `orchestrator run`: loads a cluster spec, prepares images,
//! boots the cluster, runs a scenario's steps through the test API with a live progress
//! view, and writes `report.json` and `junit.xml` into the run directory next to each
//! node's serial log.
//!
//! The first failing step fails the run; the steps after it are reported as skipped. The
//! run directory keeps logs and reports; disk images go when the cluster stops.

mod boot;
pub mod fault_summary;
pub mod pace;
pub mod placement;
pub mod progress;
pub mod report;
pub mod steps;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};

use crate::cluster::{install_teardown_on_signals, Cluster, ClusterOptions, NodeImage, Retain};
use crate::spec::{ClusterSpec, ScenarioSpec};

pub use boot::boot_with_progress;
pub use progress::Progress;
pub use report::{Outcome, Phase, RunReport, StepRecord};

/// What to run and where.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Cluster spec file; the built-in reference cluster when `None`.
    pub cluster_file: Option<PathBuf>,
    /// Scenario name.
    pub scenario: String,
    /// The `vmm` binary.
    pub vmm: PathBuf,
    /// Image directories already built (by name); others are built or found in the cache.
    pub images: HashMap<String, PathBuf>,
    /// The run directory (must not exist or be empty).
    pub run_dir: PathBuf,
    /// Where the VMs run, for the report (`kvm: ...` or `emulated: ...`).
    pub host: String,
    /// Copy logs and reports here at the end, and drop `run_dir` whole. Inside the
    /// emulated host the run directory is local (sockets cannot live on its 9p shares and
    /// disks are faster in memory) while the results belong on the shared cache.
    pub results_dir: Option<PathBuf>,
}

/// A spec with the scenario to run, loaded and validated.
pub struct Loaded {
    /// The cluster.
    pub spec: ClusterSpec,
    /// The scenario.
    pub scenario: ScenarioSpec,
    /// Name of the spec source, for messages.
    pub source: String,
    /// Directory relative paths in steps resolve against.
    pub spec_dir: PathBuf,
}

/// Loads the spec and finds the scenario (`None`: the boot-only scenario of `orchestrator
/// up`); errors are one line naming the fix.
pub fn load(cluster_file: Option<&Path>, scenario: Option<&str>) -> anyhow::Result<Loaded> {
    let (spec, source) = crate::check::load(cluster_file).map_err(anyhow::Error::msg)?;
    let found = match scenario {
        None => boot_only(),
        Some(name) => match spec.scenario(name) {
            Some(found) => found.clone(),
            None => {
                let known: Vec<&str> = spec.scenarios.iter().map(|s| s.name.as_str()).collect();
                bail!(
                    "{source} has no scenario {name:?}; its scenarios: {}",
                    if known.is_empty() {
                        "(none)".to_string()
                    } else {
                        known.join(", ")
                    }
                );
            }
        },
    };
    let spec_dir = match cluster_file.and_then(Path::parent) {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::env::current_dir().context("reading the current directory")?,
    };
    Ok(Loaded {
        spec,
        scenario: found,
        source,
        spec_dir,
    })
}

/// Builds (or finds in the cache) every image `spec` uses, unless given in `known`.
pub fn prepare_images(
    spec: &ClusterSpec,
    known: &HashMap<String, PathBuf>,
) -> anyhow::Result<HashMap<String, PathBuf>> {
    let mut dirs = known.clone();
    for node in &spec.nodes {
        if dirs.contains_key(&node.image) {
            continue;
        }
        let built = crate::image::build(&node.image)
            .with_context(|| format!("building image {} for node {}", node.image, node.name))?;
        dirs.insert(node.image.clone(), built.path.clone());
    }
    Ok(dirs)
}

/// A scenario that ran: its report (already written into the run directory) and the
/// cluster, still running, for [`finish`] or for holding it (`--keep`, `up`).
pub struct Finished {
    /// What happened.
    pub report: RunReport,
    /// The cluster as the last step left it.
    pub cluster: Cluster,
}

/// Runs the scenario; the report says whether it passed. Errors are problems before the
/// first step (spec, images, run directory).
pub fn run(opts: &RunOptions, progress: &Progress) -> anyhow::Result<Finished> {
    let loaded = load(opts.cluster_file.as_deref(), Some(&opts.scenario))?;
    run_loaded(opts, loaded, progress)
}

/// [`run`] for a spec already loaded (`up` runs a boot-only scenario of its own).
pub fn run_loaded(
    opts: &RunOptions,
    loaded: Loaded,
    progress: &Progress,
) -> anyhow::Result<Finished> {
    let cluster_name = loaded.spec.name.clone().unwrap_or_else(|| "cluster".into());
    let mut report = RunReport::new(&cluster_name, &opts.scenario, &opts.host, &opts.run_dir);

    let prepare = Instant::now();
    let live = progress.start("images");
    let image_dirs = prepare_images(&loaded.spec, &opts.images)?;
    let mut images = HashMap::new();
    for (name, dir) in &image_dirs {
        let opened = crate::image::ImageDir::open(dir)
            .with_context(|| format!("opening image {name} at {}", dir.display()))?;
        images.insert(name.clone(), NodeImage::from_image_dir(&opened));
    }
    live.finish("ok", Some(&format!("{} image(s)", images.len())));
    report.add_phase_time(Phase::Prepare, prepare.elapsed());

    install_teardown_on_signals()?;
    let pace = pace::Pace::measure();
    progress.line(&pace.describe());
    let mut options = ClusterOptions::new(&opts.vmm);
    options.timeouts.ready = pace.scale(options.timeouts.ready);
    options.timeouts.command = pace.scale(options.timeouts.command);
    options.run_dir = Some(opts.run_dir.clone());
    // Logs and reports stay; disks go at the end (also on Ctrl-C).
    options.retain = Retain::Logs;
    // Inside the emulated host the image cache is a 9p share: read each image once.
    options.stage_root_disks = opts.results_dir.is_some();
    let mut cluster = Cluster::new(&loaded.spec, &images, options)?;
    progress.line(&format!(
        "{} / {}: {} nodes, run directory {}",
        loaded.source,
        opts.scenario,
        loaded.spec.nodes.len(),
        opts.run_dir.display()
    ));

    let output_dir = opts.run_dir.join("output");
    let ctx = steps::StepContext {
        spec_dir: &loaded.spec_dir,
        output_dir: &output_dir,
        pace,
    };
    report.pace = pace.factor;
    run_steps(&mut cluster, &loaded.scenario, &ctx, &mut report, progress);
    report
        .write_files(&opts.run_dir)
        .with_context(|| format!("writing reports into {}", opts.run_dir.display()))?;
    Ok(Finished { report, cluster })
}

/// Tears the cluster down and, with `results_dir`, moves logs and reports there.
pub fn finish(cluster: Cluster, opts: &RunOptions) -> anyhow::Result<()> {
    cluster.teardown()?;
    finish_results(opts)
}

/// After teardown: with `results_dir`, moves logs and reports there.
pub fn finish_results(opts: &RunOptions) -> anyhow::Result<()> {
    if let Some(results) = &opts.results_dir {
        copy_results(&opts.run_dir, results)
            .with_context(|| format!("copying logs and reports into {}", results.display()))?;
        std::fs::remove_dir_all(&opts.run_dir)
            .with_context(|| format!("removing {}", opts.run_dir.display()))?;
    }
    Ok(())
}

/// The scenario `orchestrator up` runs: boot every node, nothing else.
fn boot_only() -> ScenarioSpec {
    ScenarioSpec {
        name: "up".into(),
        description: Some("boot every node and wait until each is ready".into()),
        steps: vec![crate::spec::Step::Boot],
    }
}

/// Copies the logs, reports and outputs under `from` (everything but disk images and
/// sockets) into `to`, keeping the layout.
pub fn copy_results(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let dest = to.join(entry.file_name());
        if kind.is_dir() {
            copy_results(&entry.path(), &dest)?;
        } else if kind.is_file() && !crate::cluster::is_disk_image(&entry.path()) {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

/// Runs every step in order into `report`; after the first failure the rest are skipped.
pub fn run_steps(
    cluster: &mut Cluster,
    scenario: &ScenarioSpec,
    ctx: &steps::StepContext<'_>,
    report: &mut RunReport,
    progress: &Progress,
) {
    let total = scenario.steps.len();
    let mut failed = false;
    let mut after_fault = false;
    for (i, step) in scenario.steps.iter().enumerate() {
        let label = steps::label(step);
        let phase = steps::phase_of(step, after_fault);
        after_fault |= phase == Phase::Faults;
        let mut record = StepRecord {
            index: i + 1,
            action: step.action().to_string(),
            label: label.clone(),
            phase,
            outcome: Outcome::Skipped,
            seconds: 0.0,
            message: None,
            faults: Vec::new(),
        };
        if failed {
            report.steps.push(record);
            continue;
        }
        let live = progress.start(format!("{}/{total} {label}", i + 1));
        let marks = fault_summary::mark(cluster);
        let started = Instant::now();
        let result = steps::run_step(cluster, step, ctx, &live, progress, &mut report.boots);
        let took = started.elapsed();
        record.faults = fault_summary::since(cluster, &marks);
        record.seconds = took.as_secs_f64();
        report.add_phase_time(phase, took);
        match result {
            Ok(message) => {
                record.outcome = Outcome::Passed;
                record.message = message.map(|m| clip(m.trim(), 2000));
                let injected = record.faults.join("; ");
                live.finish("ok", (!injected.is_empty()).then_some(injected.as_str()));
            }
            Err(e) => {
                failed = true;
                let text = e.to_string();
                record.outcome = Outcome::Failed;
                record.message = Some(clip(&text, 8000));
                live.finish("FAIL", Some(&text));
            }
        }
        report.steps.push(record);
    }
}

fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes more)", &text[..end], text.len() - end)
}
