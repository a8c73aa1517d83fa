//! One scenario step against a running cluster: the spec's action mapped onto the test API.

use std::path::Path;
use std::time::Duration;

use crate::cluster::{Cluster, ClusterError};
use crate::spec::{parse_duration, FaultRule, FaultTarget, Step};

use super::boot::boot_with_progress;
use super::progress::Live;
use super::report::Phase;

/// Default time limit of waits that do not name one (nested virtualization is slow).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);

/// Where relative paths of a step resolve.
pub struct StepContext<'a> {
    /// Directory of the spec file (`copy_to` sources).
    pub spec_dir: &'a Path,
    /// Directory for `copy_from` destinations.
    pub output_dir: &'a Path,
    /// This host's pace: every wait is scaled by it.
    pub pace: super::pace::Pace,
}

/// A command as one line: its first non-empty line, with ` …` when more follow (a script
/// written as a multi-line string).
fn brief(command: &str) -> String {
    let mut lines = command.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("");
    if lines.next().is_some() {
        format!("{first} …")
    } else {
        first.to_string()
    }
}

/// One line saying what `step` does.
pub fn label(step: &Step) -> String {
    let a = step.action();
    match step {
        Step::Boot => "boot every node in dependency order".to_string(),
        Step::Exec { node, command }
        | Step::Fail { node, command }
        | Step::WaitUntilFails { node, command, .. } => format!("{a} {node}: {}", brief(command)),
        Step::Succeed {
            node,
            command,
            expect,
        }
        | Step::WaitUntilSucceeds {
            node,
            command,
            expect,
            ..
        } => match expect {
            Some(e) => format!("{a} {node}: {} → {e:?}", brief(command)),
            None => format!("{a} {node}: {}", brief(command)),
        },
        Step::WaitForUnit { node, unit, .. } => format!("{a} {node}: {unit}"),
        Step::WaitForPort { node, port, .. } => format!("{a} {node}: {port}"),
        Step::WaitForFile { node, path, .. } => format!("{a} {node}: {path}"),
        Step::WaitReady { node, .. }
        | Step::Crash { node }
        | Step::Start { node }
        | Step::Shutdown { node }
        | Step::Freeze { node }
        | Step::Thaw { node } => format!("{a} {node}"),
        Step::Partition { nodes, from } => {
            format!("partition [{}] from [{}]", nodes.join(" "), from.join(" "))
        }
        Step::Block { from, to } => format!("block {from} → {to}"),
        Step::Heal => "heal every partition and block".to_string(),
        Step::Link {
            from,
            to,
            loss,
            delay,
        } => format!(
            "link {from} → {to}: loss {}, delay {}",
            loss.unwrap_or(0.0),
            delay.as_deref().unwrap_or("0")
        ),
        Step::Fault {
            node,
            disk,
            network,
            rule,
            seed,
        } => {
            let device = match (disk, network) {
                (Some(d), _) => format!("disk {d}"),
                (None, Some(n)) => format!("network {n}"),
                (None, None) => "?".into(),
            };
            let fields: Vec<String> = rule
                .iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}={s}"),
                    v => format!("{k}={v}"),
                })
                .collect();
            let seed = seed.map(|s| format!(" (seed {s})")).unwrap_or_default();
            format!("fault {node} {device}: {}{seed}", fields.join(" "))
        }
        Step::ClearFaults { node } => format!("clear_faults {node}"),
        Step::PowerCut { node, keep } => match keep {
            Some(k) => format!("power_cut {node} (keep {k})"),
            None => format!("power_cut {node}"),
        },
        Step::CopyTo {
            node,
            source,
            destination,
        } => format!("copy_to {node}: {source} → {destination}"),
        Step::CopyFrom {
            node,
            source,
            destination,
        } => format!("copy_from {node}: {source} → {destination}"),
        Step::Sleep { duration } => format!("sleep {duration}"),
    }
}

/// Whether `step` injects a fault (the report's faults phase starts at the first one).
pub fn is_fault(step: &Step) -> bool {
    matches!(
        step,
        Step::Partition { .. }
            | Step::Block { .. }
            | Step::Link { .. }
            | Step::Crash { .. }
            | Step::Shutdown { .. }
            | Step::Freeze { .. }
            | Step::Fault { .. }
            | Step::PowerCut { .. }
    )
}

/// The phase a step belongs to, given whether a fault came before it.
pub fn phase_of(step: &Step, after_fault: bool) -> Phase {
    match step {
        Step::Boot => Phase::Boot,
        _ if after_fault || is_fault(step) => Phase::Faults,
        _ => Phase::Checks,
    }
}

/// A step's wait: its `timeout` (or the default) scaled by the host's pace.
fn wait_limit(
    timeout: &Option<String>,
    pace: &super::pace::Pace,
) -> Result<Duration, ClusterError> {
    let written = match timeout {
        None => DEFAULT_WAIT,
        Some(t) => parse_duration(t).map_err(|e| ClusterError::BadStep {
            reason: format!("timeout {t:?}: {e}"),
        })?,
    };
    Ok(pace.scale(written))
}

fn expect_in(
    node: &str,
    command: &str,
    stdout: String,
    expect: &Option<String>,
) -> Result<String, ClusterError> {
    match expect {
        Some(text) if !stdout.contains(text.as_str()) => Err(ClusterError::BadStep {
            reason: format!(
                "{node}: `{command}` exited 0 but its stdout does not contain {text:?}; stdout was: {}",
                stdout.trim()
            ),
        }),
        _ => Ok(stdout),
    }
}

/// Runs `step`; returns output worth reporting. `live` shows what is being awaited.
pub fn run_step(
    cluster: &mut Cluster,
    step: &Step,
    ctx: &StepContext<'_>,
    live: &Live,
    progress: &super::progress::Progress,
    boots: &mut Vec<crate::cluster::BootTimes>,
) -> Result<Option<String>, ClusterError> {
    let out = match step {
        Step::Boot => {
            let times = boot_with_progress(cluster, progress)?;
            let mut text: Vec<String> = times.iter().map(|t| t.describe()).collect();
            text.extend(crate::cluster::slowest(&times));
            boots.extend(times);
            Some(text.join("\n"))
        }
        Step::Exec { node, command } => {
            let o = cluster.node(node)?.run(command)?;
            Some(format!("exit {}: {}", o.code, o.stdout.trim()))
        }
        Step::Succeed {
            node,
            command,
            expect,
        } => {
            let stdout = cluster.node(node)?.succeed(command)?;
            Some(expect_in(node, command, stdout, expect)?)
        }
        Step::Fail { node, command } => {
            let o = cluster.node(node)?.run(command)?;
            if o.timed_out {
                // Killed at the time limit: not a failure of the command's own.
                return Err(ClusterError::BadStep {
                    reason: format!(
                        "{node}: `{command}` was still running at its time limit and was \
                         killed; a fail step needs it to exit non-zero by itself"
                    ),
                });
            }
            if o.code == 0 {
                return Err(ClusterError::CommandSucceeded {
                    node: node.clone(),
                    command: command.clone(),
                    stdout: o.stdout,
                });
            }
            Some(format!("exit {} as required: {}", o.code, o.stderr.trim()))
        }
        Step::WaitUntilSucceeds {
            node,
            command,
            expect,
            timeout,
        } => {
            let limit = wait_limit(timeout, &ctx.pace)?;
            live.set(&format!("up to {}s", limit.as_secs()));
            let n = cluster.node(node)?;
            Some(match expect {
                Some(text) => n.wait_until_prints(command, text, limit)?,
                None => n.wait_until_succeeds(command, limit)?,
            })
        }
        Step::WaitUntilFails {
            node,
            command,
            timeout,
        } => {
            let limit = wait_limit(timeout, &ctx.pace)?;
            live.set(&format!("up to {}s", limit.as_secs()));
            Some(cluster.node(node)?.wait_until_fails(command, limit)?)
        }
        Step::WaitForUnit {
            node,
            unit,
            timeout,
        } => {
            cluster
                .node(node)?
                .wait_for_unit(unit, wait_limit(timeout, &ctx.pace)?)?;
            None
        }
        Step::WaitForPort {
            node,
            port,
            timeout,
        } => {
            cluster
                .node(node)?
                .wait_for_open_port(*port, wait_limit(timeout, &ctx.pace)?)?;
            None
        }
        Step::WaitForFile {
            node,
            path,
            timeout,
        } => {
            cluster
                .node(node)?
                .wait_for_file(path, wait_limit(timeout, &ctx.pace)?)?;
            None
        }
        Step::WaitReady { node, timeout } => {
            let node = cluster.node(node)?;
            node.wait_ready_within(wait_limit(timeout, &ctx.pace)?)?;
            let times = node.boot_times();
            let text = times.as_ref().map(|t| t.describe());
            boots.extend(times);
            text
        }
        Step::Partition { nodes, from } => {
            let a: Vec<&str> = nodes.iter().map(String::as_str).collect();
            let b: Vec<&str> = from.iter().map(String::as_str).collect();
            cluster.partition_groups(&a, &b)?;
            None
        }
        Step::Block { from, to } => {
            cluster.block_link(from, to)?;
            None
        }
        Step::Heal => {
            cluster.heal();
            None
        }
        Step::Link {
            from,
            to,
            loss,
            delay,
        } => {
            let delay = delay
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|e| ClusterError::BadStep {
                    reason: format!("delay: {e}"),
                })?;
            cluster.set_link(from, to, *loss, delay)?;
            None
        }
        Step::Crash { node } => {
            cluster.node_mut(node)?.crash()?;
            None
        }
        Step::Start { node } => {
            cluster.node_mut(node)?.start()?;
            None
        }
        Step::Shutdown { node } => {
            let how = cluster.node_mut(node)?.shutdown()?;
            Some(format!("stopped by {how:?}"))
        }
        Step::Freeze { node } => {
            cluster.node_mut(node)?.freeze()?;
            None
        }
        Step::Thaw { node } => {
            cluster.node_mut(node)?.thaw()?;
            None
        }
        Step::Fault {
            node,
            disk,
            network,
            rule,
            seed,
        } => {
            let bad = |reason: String| ClusterError::BadStep {
                reason: format!("fault {node}: {reason}"),
            };
            let target = FaultTarget::of(disk.as_deref(), network.as_deref()).map_err(bad)?;
            let rule = FaultRule::parse(&target, rule).map_err(|e| bad(e.join("; ")))?;
            let n = cluster.node_mut(node)?;
            let placed = n.add_fault(&target, rule, *seed)?;
            let when = if n.is_running() {
                "in force"
            } else {
                "in force from its next start"
            };
            let count = n.fault_rules().block.len() + n.fault_rules().net.len();
            Some(format!("{placed}, {when}; {node} has {count} rule(s)"))
        }
        Step::ClearFaults { node } => {
            cluster.node_mut(node)?.clear_faults()?;
            None
        }
        Step::PowerCut { node, keep } => {
            let cut = cluster.node_mut(node)?.power_cut(keep.unwrap_or(0.0))?;
            Some(cut.describe())
        }
        Step::CopyTo {
            node,
            source,
            destination,
        } => {
            let local = ctx.spec_dir.join(source);
            let n = cluster.node(node)?.copy_to(&local, destination)?;
            Some(format!("{n} bytes"))
        }
        Step::CopyFrom {
            node,
            source,
            destination,
        } => {
            let local = ctx.output_dir.join(destination);
            if let Some(parent) = local.parent() {
                std::fs::create_dir_all(parent).map_err(ClusterError::io("creating", parent))?;
            }
            let n = cluster.node(node)?.copy_from(source, &local)?;
            Some(format!("{n} bytes into {}", local.display()))
        }
        Step::Sleep { duration } => {
            let d = parse_duration(duration).map_err(|e| ClusterError::BadStep {
                reason: format!("duration {duration:?}: {e}"),
            })?;
            std::thread::sleep(d);
            None
        }
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_one_line() {
        let step = Step::Succeed {
            node: "n1".into(),
            command: "\n  # install the writer\n  cat > /x <<'EOF'\nloop\nEOF\n".into(),
            expect: Some("ok".into()),
        };
        assert_eq!(label(&step), "succeed n1: # install the writer … → \"ok\"");
        let step = Step::Exec {
            node: "n1".into(),
            command: "echo hi".into(),
        };
        assert_eq!(label(&step), "exec n1: echo hi");
        let mut rule = serde_json::Map::new();
        rule.insert("op".into(), "flush".into());
        rule.insert("action".into(), "eio".into());
        let step = Step::Fault {
            node: "db".into(),
            disk: Some("etcd".into()),
            network: None,
            rule,
            seed: Some(3),
        };
        assert_eq!(
            label(&step),
            "fault db disk etcd: action=eio op=flush (seed 3)"
        );
        let step = Step::PowerCut {
            node: "db".into(),
            keep: None,
        };
        assert_eq!(label(&step), "power_cut db");
        assert!(is_fault(&step));
        assert!(!is_fault(&Step::ClearFaults { node: "db".into() }));
    }
}
