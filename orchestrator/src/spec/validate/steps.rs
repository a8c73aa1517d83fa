//! Scenario steps: referenced nodes exist, durations and paths are well-formed.

use super::{names, node_names, Checker};
use crate::spec::error::ProblemKind;
use crate::spec::locate::FieldPath;
use crate::spec::scenario::Step;
use crate::spec::units::parse_duration;
use crate::spec::{ClusterSpec, FaultRule, FaultTarget, NodeSpec};

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
        | Step::Thaw { node: n }
        | Step::ClearFaults { node: n } => node(c, at.key("node"), n),
        Step::PowerCut { node: n, keep } => {
            node(c, at.key("node"), n);
            if keep.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
                c.report(
                    at.key("keep"),
                    ProblemKind::BadValue,
                    "keep is the fraction of unflushed blocks that survive; use 0.0 to 1.0".into(),
                );
            }
        }
        Step::Fault {
            node: n,
            disk,
            network,
            rule,
            ..
        } => {
            node(c, at.key("node"), n);
            if let Some(spec_node) = spec.node(n) {
                check_fault(c, spec_node, disk.as_deref(), network.as_deref(), rule, &at);
            }
        }
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

/// A `fault` step: one device of the node, named as the spec names it, and a rule the
/// vmm's own parser accepts for that kind of device.
fn check_fault(
    c: &mut Checker<'_>,
    node: &NodeSpec,
    disk: Option<&str>,
    network: Option<&str>,
    rule: &serde_json::Map<String, serde_json::Value>,
    at: &FieldPath,
) {
    let target = match FaultTarget::of(disk, network) {
        Ok(t) => t,
        Err(why) => {
            c.report(at.key("disk"), ProblemKind::BadValue, why);
            return;
        }
    };
    match &target {
        FaultTarget::Disk(d) => {
            let named = node.disks.iter().filter_map(|x| x.name.as_deref());
            if d != "root" && !node.disks.iter().any(|x| x.name.as_deref() == Some(d)) {
                c.report(
                    at.key("disk"),
                    ProblemKind::UnknownDisk,
                    format!(
                        "node {} has no disk named {d:?}; its named disks: {} (and root, the \
                         image's root disk); give the disk a name in the node's disks to \
                         target it",
                        node.name,
                        names(named)
                    ),
                );
            }
        }
        FaultTarget::Network(net) => {
            if !node.networks.iter().any(|x| &x.network == net) {
                c.report(
                    at.key("network"),
                    ProblemKind::UnknownNetwork,
                    format!(
                        "node {} is not attached to network {net:?}; its networks: {}",
                        node.name,
                        names(node.networks.iter().map(|x| x.network.as_str()))
                    ),
                );
            }
        }
    }
    if let Err(errors) = FaultRule::parse(&target, rule) {
        for e in errors {
            c.report(at.key("rule"), ProblemKind::BadFaultRule, e);
        }
    }
}
