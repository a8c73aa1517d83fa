//! Consistency checks of a parsed spec. Every problem is collected (not just the first) with
//! the line and field it comes from.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use super::error::{Problem, ProblemKind};
use super::graph::find_cycles;
use super::locate::{FieldPath, Locator};
use super::scenario::Step;
use super::units::{parse_duration, parse_size};
use super::{ClusterSpec, ReadinessCheck};

/// Collects problems with their places.
struct Checker<'a> {
    file: &'a str,
    loc: &'a Locator<'a>,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn report(&mut self, field: FieldPath, kind: ProblemKind, message: String) {
        self.problems.push(Problem {
            file: self.file.to_string(),
            line: self.loc.line(&field),
            field: field.to_string(),
            kind,
            message,
        });
    }

    /// Reports names used more than once in `names` (the later uses), and bad names.
    fn unique_names<'n>(&mut self, what: &str, names: impl Iterator<Item = (FieldPath, &'n str)>) {
        let mut seen = HashSet::new();
        for (field, name) in names {
            if !is_good_name(name) {
                self.report(
                    field.clone(),
                    ProblemKind::BadName,
                    format!("{what} name {name:?} is not valid; use 1-63 lowercase letters, digits and '-', starting with a letter"),
                );
            }
            if !seen.insert(name) {
                self.report(
                    field,
                    ProblemKind::DuplicateName,
                    format!("{what} name {name:?} is used more than once; give each {what} its own name"),
                );
            }
        }
    }
}

fn is_good_name(name: &str) -> bool {
    name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Checks `spec` (parsed from `text`); returns every problem, in document order.
pub fn validate(spec: &ClusterSpec, file: &str, loc: &Locator<'_>) -> Vec<Problem> {
    let mut c = Checker {
        file,
        loc,
        problems: Vec::new(),
    };
    let root = FieldPath::default();
    c.unique_names(
        "network",
        spec.networks
            .iter()
            .enumerate()
            .map(|(i, n)| (root.key("network").index(i).key("name"), n.name.as_str())),
    );
    c.unique_names(
        "node",
        spec.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (root.key("node").index(i).key("name"), n.name.as_str())),
    );
    c.unique_names(
        "scenario",
        spec.scenarios
            .iter()
            .enumerate()
            .map(|(i, s)| (root.key("scenario").index(i).key("name"), s.name.as_str())),
    );
    check_networks(&mut c, spec);
    check_nodes(&mut c, spec);
    check_dependencies(&mut c, spec);
    check_scenarios(&mut c, spec);
    c.problems.sort_by_key(|p| p.line);
    c.problems
}

fn check_networks(c: &mut Checker<'_>, spec: &ClusterSpec) {
    for (i, net) in spec.networks.iter().enumerate() {
        let field = FieldPath::default().key("network").index(i).key("subnet");
        match net.subnet() {
            Ok(subnet) if subnet.trunc() != subnet => c.report(
                field,
                ProblemKind::BadAddress,
                format!(
                    "subnet {} has host bits set; write {}",
                    net.subnet,
                    subnet.trunc()
                ),
            ),
            Ok(subnet) if subnet.prefix_len() > 30 => c.report(
                field,
                ProblemKind::BadAddress,
                format!(
                    "subnet {} has no room for nodes; use a prefix of /30 or shorter",
                    net.subnet
                ),
            ),
            Ok(_) => {}
            Err(_) => c.report(
                field,
                ProblemKind::BadAddress,
                format!(
                    "subnet {:?} is not an IPv4 subnet; write it like \"10.0.0.0/24\"",
                    net.subnet
                ),
            ),
        }
    }
}

fn check_nodes(c: &mut Checker<'_>, spec: &ClusterSpec) {
    // (network name, address) -> first node using it.
    let mut addresses: HashMap<(&str, Ipv4Addr), &str> = HashMap::new();
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
        let mut attached = HashSet::new();
        for (n, nic) in node.networks.iter().enumerate() {
            let nic_field = here.key("networks").index(n);
            let Some(net) = spec.network(&nic.network) else {
                c.report(nic_field.key("network"), ProblemKind::UnknownNetwork, format!("network {:?} is not defined; add a [[network]] with that name or use one of: {}", nic.network, names(spec.networks.iter().map(|n| n.name.as_str()))));
                continue;
            };
            if !attached.insert(nic.network.as_str()) {
                c.report(
                    nic_field.key("network"),
                    ProblemKind::DuplicateName,
                    format!(
                        "node {} is attached to network {} twice; keep one entry",
                        node.name, nic.network
                    ),
                );
            }
            let addr_field = nic_field.key("address");
            let Ok(addr) = nic.address() else {
                c.report(addr_field, ProblemKind::BadAddress, format!("address {:?} is not an IPv4 address with prefix; write it like \"10.0.0.11/24\"", nic.address));
                continue;
            };
            let Ok(subnet) = net.subnet() else { continue };
            let host = addr.addr();
            if !subnet.contains(&host)
                || addr.prefix_len() != subnet.prefix_len()
                || host == subnet.network()
                || host == subnet.broadcast()
            {
                c.report(addr_field.clone(), ProblemKind::AddressOutsideSubnet, format!("address {} is not a host address of network {} ({}); pick one between {} and {} with prefix /{}", nic.address, net.name, net.subnet, first_host(subnet), last_host(subnet), subnet.prefix_len()));
            }
            if let Some(other) = addresses.insert((nic.network.as_str(), host), node.name.as_str())
            {
                c.report(addr_field, ProblemKind::DuplicateAddress, format!("address {host} on network {} is already used by node {other}; give each node its own address", net.name));
            }
        }
        for (r, check) in node.ready.iter().enumerate() {
            let field = here.key("ready").index(r);
            let bad = match check {
                ReadinessCheck::Unit(u) if u.trim().is_empty() => {
                    Some("unit is empty; name a systemd unit")
                }
                ReadinessCheck::Port(0) => {
                    Some("port 0 cannot be checked; use the service's TCP port")
                }
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
}

fn check_dependencies(c: &mut Checker<'_>, spec: &ClusterSpec) {
    for (i, node) in spec.nodes.iter().enumerate() {
        let mut seen = HashSet::new();
        for (d, dep) in node.depends_on.iter().enumerate() {
            let field = FieldPath::default()
                .key("node")
                .index(i)
                .key("depends_on")
                .index(d);
            if spec.node(dep).is_none() {
                c.report(
                    field,
                    ProblemKind::UnknownNode,
                    format!(
                        "node {} depends on {dep:?}, which is not defined; known nodes: {}",
                        node.name,
                        node_names(spec)
                    ),
                );
            } else if !seen.insert(dep.as_str()) {
                c.report(
                    field,
                    ProblemKind::DuplicateName,
                    format!(
                        "{dep} is listed twice in depends_on of {}; keep one",
                        node.name
                    ),
                );
            }
        }
    }
    for cycle in find_cycles(spec) {
        let field = FieldPath::default()
            .key("node")
            .index(cycle.node)
            .key("depends_on")
            .index(cycle.entry);
        c.report(
            field,
            ProblemKind::DependencyCycle,
            format!(
                "dependency cycle {}; remove one of these depends_on entries",
                cycle.describe()
            ),
        );
    }
}

fn check_scenarios(c: &mut Checker<'_>, spec: &ClusterSpec) {
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
        | Step::Start { node: n } => node(c, at.key("node"), n),
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

fn first_host(net: ipnet::Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).saturating_add(1))
}

fn last_host(net: ipnet::Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.broadcast()).saturating_sub(1))
}

fn node_names(spec: &ClusterSpec) -> String {
    names(spec.nodes.iter().map(|n| n.name.as_str()))
}

fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let list: Vec<&str> = names.collect();
    if list.is_empty() {
        "(none)".into()
    } else {
        list.join(", ")
    }
}
