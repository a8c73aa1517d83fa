//! Scenario steps: referenced nodes exist, durations and paths are well-formed.

use super::{node_names, Checker};
use crate::spec::error::ProblemKind;
use crate::spec::locate::FieldPath;
use crate::spec::scenario::Step;
use crate::spec::units::parse_duration;
use crate::spec::ClusterSpec;

/// Checks every scenario's steps.
pub(super) fn check_scenarios(c: &mut Checker<'_>, spec: &ClusterSpec) {
    for (s, scenario) in spec.scenarios.iter().enumerate() {
        let steps = FieldPath::default().key("scenario").index(s).key("steps");
        if scenario.steps.is_empty() {
            c.report(
                steps.clone(),
                ProblemKind::BadValue,
                format!("scenario {} has no steps", scenario.name),
            );
        }
        for (i, step) in scenario.steps.iter().enumerate() {
            check_step(c, spec, step, steps.index(i));
        }
    }
}

fn check_step(c: &mut Checker<'_>, spec: &ClusterSpec, step: &Step, at: FieldPath) {
    let node = |c: &mut Checker<'_>, field: FieldPath, name: &str| {
        if spec.node(name).is_none() {
            c.report(
                field,
                ProblemKind::UnknownNode,
                format!(
                    "{} step names node {name:?}, which is not defined; known nodes: {}",
                    step.action(),
                    node_names(spec)
                ),
            );
        }
    };
    let duration = |c: &mut Checker<'_>, field: FieldPath, text: &Option<String>| {
        if let Some(Err(e)) = text.as_deref().map(parse_duration) {
            c.report(field, ProblemKind::BadDuration, e.to_string());
        }
    };
    let absolute = |c: &mut Checker<'_>, field: FieldPath, path: &str| {
        if !path.starts_with('/') {
            c.report(
                field,
                ProblemKind::BadValue,
                format!("guest path {path:?} must be absolute"),
            );
        }
    };
    match step {
        Step::Boot | Step::Heal => {}
        Step::Exec { node: n, .. }
        | Step::Succeed { node: n, .. }
        | Step::Fail { node: n, .. }
        | Step::Crash { node: n }
        | Step::Start { node: n }
        | Step::Shutdown { node: n }
        | Step::Freeze { node: n }
        | Step::Thaw { node: n } => node(c, at.key("node"), n),
        Step::WaitUntilSucceeds {
            node: n, timeout, ..
        }
        | Step::WaitUntilFails {
            node: n, timeout, ..
        }
        | Step::WaitForUnit {
            node: n, timeout, ..
        }
        | Step::WaitReady { node: n, timeout } => {
            node(c, at.key("node"), n);
            duration(c, at.key("timeout"), timeout);
        }
        Step::WaitForPort {
            node: n,
            port,
            timeout,
        } => {
            node(c, at.key("node"), n);
            duration(c, at.key("timeout"), timeout);
            if *port == 0 {
                c.report(
                    at.key("port"),
                    ProblemKind::BadValue,
                    "port 0 cannot be waited for; use the service's TCP port".into(),
                );
            }
        }
        Step::WaitForFile {
            node: n,
            path,
            timeout,
        } => {
            node(c, at.key("node"), n);
            duration(c, at.key("timeout"), timeout);
            absolute(c, at.key("path"), path);
        }
        Step::Partition { nodes, from } => {
            for (key, group) in [("nodes", nodes), ("from", from)] {
                if group.is_empty() {
                    c.report(
                        at.key(key),
                        ProblemKind::BadValue,
                        format!("partition needs at least one node in {key}"),
                    );
                }
                for (i, n) in group.iter().enumerate() {
                    node(c, at.key(key).index(i), n);
                }
            }
            for (i, n) in from.iter().enumerate() {
                if nodes.contains(n) {
                    c.report(
                        at.key("from").index(i),
                        ProblemKind::BadValue,
                        format!("node {n} is on both sides of the partition"),
                    );
                }
            }
        }
        Step::Block { from, to } | Step::Link { from, to, .. } => {
            node(c, at.key("from"), from);
            node(c, at.key("to"), to);
            if from == to {
                c.report(
                    at.key("to"),
                    ProblemKind::BadValue,
                    format!("a link needs two different nodes, not {from} twice"),
                );
            }
            if let Step::Link { loss, delay, .. } = step {
                if loss.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
                    c.report(
                        at.key("loss"),
                        ProblemKind::BadValue,
                        "loss is a probability; use 0.0 to 1.0".into(),
                    );
                }
                duration(c, at.key("delay"), delay);
            }
        }
        Step::CopyTo {
            node: n,
            destination,
            ..
        } => {
            node(c, at.key("node"), n);
            absolute(c, at.key("destination"), destination);
        }
        Step::CopyFrom {
            node: n, source, ..
        } => {
            node(c, at.key("node"), n);
            absolute(c, at.key("source"), source);
        }
        Step::Sleep { duration: d } => duration(c, at.key("duration"), &Some(d.clone())),
    }
}
