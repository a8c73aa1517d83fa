//! Which faults a step injected: the lines each node's fault log (`<run>/<node>/faults.jsonl`)
//! gained while the step ran, grouped into one line per node, device, rule and action, with
//! devices in spec terms (`node02 etcd (disk1): 3 × flush eio (block[0])`).

use std::collections::BTreeMap;

use devices::fault::FaultRecord;

use crate::cluster::{Cluster, NodeLaunch};

/// Where each node's fault log ended before a step.
pub struct Marks(Vec<(String, u64)>);

/// Marks the end of every node's fault log.
pub fn mark(cluster: &Cluster) -> Marks {
    Marks(
        cluster
            .nodes()
            .iter()
            .map(|n| (n.name().to_string(), n.fault_log_len()))
            .collect(),
    )
}

/// The faults logged since `marks`, one line per node, device, operation, rule and action.
pub fn since(cluster: &Cluster, marks: &Marks) -> Vec<String> {
    let mut lines = Vec::new();
    for (name, offset) in &marks.0 {
        let Ok(node) = cluster.node(name) else {
            continue;
        };
        lines.extend(summarize(name, node.launch(), &node.faults_since(*offset)));
    }
    lines
}

/// Faults of one kind: (device, op, rule, action).
type Kind<'a> = (&'a str, &'a str, &'a str, &'a str);
/// How often, one detail, first and last time.
type Seen<'a> = (u64, Option<&'a str>, f64, f64);

/// Groups `records` of node `node` (launched as `launch`) into report lines.
pub fn summarize(node: &str, launch: &NodeLaunch, records: &[FaultRecord]) -> Vec<String> {
    let mut groups: BTreeMap<Kind<'_>, Seen<'_>> = BTreeMap::new();
    for r in records {
        let key = (
            r.device.as_str(),
            r.op.as_str(),
            r.rule.as_str(),
            r.action.as_str(),
        );
        let entry = groups
            .entry(key)
            .or_insert((0, r.detail.as_deref(), r.time, r.time));
        entry.0 += 1;
        entry.2 = entry.2.min(r.time);
        entry.3 = entry.3.max(r.time);
    }
    groups
        .into_iter()
        .map(
            |((device, op, rule, action), (count, detail, first, last))| {
                let detail = match detail {
                    Some(d) if count == 1 || !d.contains("bit") => format!(" {d}"),
                    _ => String::new(),
                };
                let span = if count > 1 {
                    format!(" over {:.1} s", last - first)
                } else {
                    String::new()
                };
                format!(
                    "{node} {}: {count} × {op} {action}{detail} ({rule}){span}",
                    launch.device_label(device)
                )
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{NodeImage, NodePaths};
    use crate::spec::ClusterSpec;

    fn launch() -> NodeLaunch {
        let spec = ClusterSpec::from_str(
            r#"
[[network]]
name = "net0"
subnet = "10.0.0.0/24"
[[node]]
name = "db"
role = "storage"
image = "img"
disks = [{ name = "etcd", size = "1G" }]
networks = [{ network = "net0", address = "10.0.0.11/24" }]
"#,
            "t.toml",
        )
        .unwrap();
        let image = NodeImage {
            kernel: "/k".into(),
            initrd: None,
            rootfs: Some("/r".into()),
            cmdline: String::new(),
        };
        NodeLaunch::from_spec(
            &spec.nodes[0],
            0,
            &image,
            &NodePaths::in_dir("/x/db"),
            |_| "/s".into(),
        )
        .unwrap()
    }

    fn record(time: f64, device: &str, op: &str, rule: &str, action: &str) -> FaultRecord {
        FaultRecord {
            time,
            device: device.into(),
            op: op.into(),
            request: 1,
            offset: None,
            len: None,
            rule: rule.into(),
            action: action.into(),
            detail: (action == "delay").then(|| "delay_ms=200".to_string()),
        }
    }

    #[test]
    fn faults_are_grouped_per_device_rule_and_action_in_spec_terms() {
        let records = [
            record(10.0, "disk1", "flush", "block[0]", "eio"),
            record(10.5, "nic0", "tx", "net[0]", "drop"),
            record(12.0, "disk1", "flush", "block[0]", "eio"),
            record(13.0, "disk1", "write", "block[1]", "delay"),
            record(13.25, "disk1", "flush", "block[0]", "eio"),
        ];
        assert_eq!(
            summarize("db", &launch(), &records),
            [
                "db etcd (disk1): 3 × flush eio (block[0]) over 3.2 s",
                "db etcd (disk1): 1 × write delay delay_ms=200 (block[1])",
                "db net0 (nic0): 1 × tx drop (net[0])",
            ]
        );
        assert!(summarize("db", &launch(), &[]).is_empty());
    }
}
