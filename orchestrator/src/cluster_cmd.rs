//! `status`, `logs`, `exec`, `stop` and `clean`: commands against a cluster that
//! `orchestrator up` or `run --keep` left running (see `orchestrator::hold`).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use orchestrator::hold::{self, client, HeldState};
use orchestrator::runner::placement;

fn held(run_dir: Option<&Path>) -> anyhow::Result<(std::path::PathBuf, HeldState)> {
    let dir = hold::resolve_run_dir(run_dir).map_err(anyhow::Error::msg)?;
    let state = HeldState::read(&dir).map_err(anyhow::Error::msg)?;
    if !state.owner_alive() {
        bail!(
            "the cluster in {} is not running any more (its orchestrator, pid {}, is gone); `orchestrator clean` removes what it left",
            dir.display(),
            state.pid
        );
    }
    Ok((dir, state))
}

/// `orchestrator status`: one line per node.
pub fn status(run_dir: Option<&Path>) -> anyhow::Result<i32> {
    let (dir, state) = held(run_dir)?;
    let status = client::status(&state).map_err(anyhow::Error::msg)?;
    println!(
        "cluster in {} (orchestrator pid {})",
        dir.display(),
        state.pid
    );
    for node in status["nodes"].as_array().into_iter().flatten() {
        println!(
            "{:<12} {:<8} pid {}",
            node["name"].as_str().unwrap_or("?"),
            node["state"].as_str().unwrap_or("?"),
            node["pid"]
        );
    }
    Ok(0)
}

/// `orchestrator logs NODE`.
pub fn logs(node: &str, run_dir: Option<&Path>) -> anyhow::Result<i32> {
    let dir = hold::resolve_run_dir(run_dir).map_err(anyhow::Error::msg)?;
    let text = client::logs(&dir, node).map_err(anyhow::Error::msg)?;
    std::io::stdout().write_all(&text)?;
    Ok(0)
}

/// `orchestrator exec NODE -- CMD`: streams stdout and stderr, exits with the command's code.
pub fn exec(node: &str, argv: &[String], run_dir: Option<&Path>) -> anyhow::Result<i32> {
    let (_, state) = held(run_dir)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::io::AsyncWriteExt;
        let client = client::agent(&state, node)
            .await
            .map_err(|e| anyhow!("node {node}: {e}"))?;
        let req = agent::ExecRequest::shell(argv.join(" "));
        let mut running = client.exec(req).await.context("starting the command")?;
        let mut stdout = tokio::io::stdout();
        let mut stderr = tokio::io::stderr();
        while let Some(event) = running.next_event().await? {
            match event {
                agent::client::ExecEvent::Stdout(data) => {
                    stdout.write_all(&data).await?;
                    stdout.flush().await?;
                }
                agent::client::ExecEvent::Stderr(data) => {
                    stderr.write_all(&data).await?;
                    stderr.flush().await?;
                }
                agent::client::ExecEvent::Exited { status, .. } => {
                    return Ok(status.shell_code().clamp(0, 255));
                }
            }
        }
        bail!("node {node}: the connection closed before the command exited")
    })
}

/// `orchestrator stop`.
pub fn stop(run_dir: Option<&Path>) -> anyhow::Result<i32> {
    let (dir, state) = held(run_dir)?;
    client::stop(&state, Duration::from_secs(120)).map_err(anyhow::Error::msg)?;
    println!("stopped the cluster in {}", dir.display());
    Ok(0)
}

/// `orchestrator clean`: in every run directory whose orchestrator is gone, removes disks,
/// sockets and the stale `cluster.json`; with `all`, the whole directory.
pub fn clean(all: bool) -> anyhow::Result<i32> {
    let root = placement::runs_root();
    let Ok(entries) = std::fs::read_dir(&root) else {
        println!("nothing to clean in {}", root.display());
        return Ok(0);
    };
    let (mut cleaned, mut running) = (0, 0);
    for entry in entries.flatten() {
        let dir = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if HeldState::read(&dir).is_ok_and(|s| s.owner_alive()) || in_use(&dir) {
            running += 1;
            continue;
        }
        let _ = std::fs::remove_file(dir.join(hold::STATE_FILE));
        if all {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        } else {
            orchestrator::cluster::remove_disks_and_sockets_under(&dir)?;
        }
        cleaned += 1;
    }
    if all {
        let _ = std::fs::remove_file(root.join("latest"));
    }
    println!(
        "cleaned {cleaned} run directories in {}{}",
        root.display(),
        if running > 0 {
            format!("; {running} in use left alone (`orchestrator stop` stops a kept cluster)")
        } else {
            String::new()
        }
    );
    Ok(0)
}

/// Whether a running process names `dir` on its command line (an emulated host's QEMU, a
/// `vmm` or a run in progress that is not held).
fn in_use(dir: &Path) -> bool {
    !orchestrator::cluster::processes_mentioning(&dir.to_string_lossy()).is_empty()
}
