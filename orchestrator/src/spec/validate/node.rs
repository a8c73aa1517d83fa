//! Per-node settings: image, CPUs, memory, disks, readiness checks.

use std::collections::HashSet;

use super::Checker;
use crate::spec::error::ProblemKind;
use crate::spec::locate::FieldPath;
use crate::spec::units::parse_size;
use crate::spec::{ClusterSpec, ReadinessCheck};

/// Checks each node's own settings.
pub(super) fn check_nodes(c: &mut Checker<'_>, spec: &ClusterSpec) {
    for (i, node) in spec.nodes.iter().enumerate() {
        let here = FieldPath::default().key("node").index(i);
        if node.image.trim().is_empty() {
            c.report(
                here.key("image"),
                ProblemKind::BadValue,
                "image is empty; name the guest image this node boots".into(),
            );
        }
        if !(1..=64).contains(&node.cpus) {
            c.report(
                here.key("cpus"),
                ProblemKind::BadValue,
                format!("cpus = {} is out of range; use 1 to 64", node.cpus),
            );
        }
        if node.memory < 64 {
            c.report(
                here.key("memory"),
                ProblemKind::BadValue,
                format!(
                    "memory = {} MiB is too small; use at least 64 (MiB)",
                    node.memory
                ),
            );
        }
        let mut disk_names = HashSet::new();
        for (d, disk) in node.disks.iter().enumerate() {
            if let Err(e) = parse_size(&disk.size) {
                c.report(
                    here.key("disks").index(d).key("size"),
                    ProblemKind::BadSize,
                    e.to_string(),
                );
            }
            if let Some(name) = &disk.name {
                if !disk_names.insert(name.as_str()) {
                    c.report(
                        here.key("disks").index(d).key("name"),
                        ProblemKind::DuplicateName,
                        format!("disk name {name:?} is used twice in node {}", node.name),
                    );
                }
            }
        }
        check_readiness(c, &here, &node.ready);
    }
}

fn check_readiness(c: &mut Checker<'_>, here: &FieldPath, ready: &[ReadinessCheck]) {
    for (r, check) in ready.iter().enumerate() {
        let field = here.key("ready").index(r);
        let bad = match check {
            ReadinessCheck::Unit(u) if u.trim().is_empty() => {
                Some("unit is empty; name a systemd unit")
            }
            ReadinessCheck::Port(0) => Some("port 0 cannot be checked; use the service's TCP port"),
            ReadinessCheck::File(p) if !p.starts_with('/') => {
                Some("file must be an absolute path in the guest")
            }
            ReadinessCheck::Command(cmd) if cmd.trim().is_empty() => {
                Some("command is empty; give a shell command")
            }
            _ => None,
        };
        if let Some(msg) = bad {
            c.report(field, ProblemKind::BadValue, msg.into());
        }
    }
}
