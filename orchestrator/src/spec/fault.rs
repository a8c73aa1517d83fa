//! The rule of a `fault` step: the fields of one `[[block]]` or `[[net]]` rule of
//! `vmm/FAULTS.md`, parsed and checked by the vmm's own rule parser (`devices::fault`), so
//! a mistake shows at `orchestrator check` time with the same words the vmm would use.
//!
//! The step names the device by its spec name (a disk's `name`, a network's `name`); the
//! runner turns that into the vmm's disk or NIC index (`cluster::NodeLaunch`), so the rule
//! itself carries no `disk` or `nic`.

use devices::fault::rules::{BlockRule, NetRule};
use devices::fault::FaultRules;
use serde_json::{Map, Value};

/// Which device of a node a `fault` step's rule is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultTarget {
    /// A disk, by its spec name (`disks[].name`, or `root` for the image's root disk).
    Disk(String),
    /// The NIC on a network, by the network's name.
    Network(String),
}

impl FaultTarget {
    /// From a step's `disk` and `network` fields: exactly one must be given.
    pub fn of(disk: Option<&str>, network: Option<&str>) -> Result<FaultTarget, String> {
        match (disk, network) {
            (Some(d), None) => Ok(FaultTarget::Disk(d.to_string())),
            (None, Some(n)) => Ok(FaultTarget::Network(n.to_string())),
            (None, None) => Err(
                "a fault step needs disk = NAME (a block rule for that disk) \
                 or network = NAME (a net rule for the node's NIC on that network)"
                    .into(),
            ),
            (Some(_), Some(_)) => Err("a fault step is for one device: give disk or network, \
                 not both (use two fault steps)"
                .into()),
        }
    }
}

impl std::fmt::Display for FaultTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FaultTarget::Disk(d) => write!(f, "disk {d}"),
            FaultTarget::Network(n) => write!(f, "network {n}"),
        }
    }
}

/// A checked rule, not yet bound to a device index.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultRule {
    /// A `[[block]]` rule.
    Block(BlockRule),
    /// A `[[net]]` rule.
    Net(NetRule),
}

impl FaultRule {
    /// Parses and checks the `rule` table of a step for `target` with the vmm's parser.
    /// Errors are one line each, without the rule's position (the caller names the field).
    pub fn parse(
        target: &FaultTarget,
        rule: &Map<String, Value>,
    ) -> Result<FaultRule, Vec<String>> {
        let (own, other, kind) = match target {
            FaultTarget::Disk(_) => ("disk", "nic", "block"),
            FaultTarget::Network(_) => ("nic", "disk", "net"),
        };
        let mut errors = Vec::new();
        if rule.contains_key(own) {
            errors.push(format!(
                "{own} is set by the step ({target}), not in the rule; remove {own} from the rule"
            ));
        }
        if rule.contains_key(other) {
            errors.push(format!(
                "{other} does not belong in a {kind} rule; the step's {target} picks the device"
            ));
        }
        if rule.contains_key("seed") {
            errors.push("seed is a field of the fault step, not of its rule; move it out".into());
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let value = Value::Object(rule.clone());
        let parsed = match target {
            FaultTarget::Disk(_) => serde_json::from_value::<BlockRule>(value).map(|r| {
                (
                    FaultRule::Block(r.clone()),
                    FaultRules {
                        block: vec![r],
                        ..FaultRules::default()
                    },
                )
            }),
            FaultTarget::Network(_) => serde_json::from_value::<NetRule>(value).map(|r| {
                (
                    FaultRule::Net(r.clone()),
                    FaultRules {
                        net: vec![r],
                        ..FaultRules::default()
                    },
                )
            }),
        };
        let (rule, alone) = parsed.map_err(|e| {
            vec![format!(
                "{}; a {kind} rule takes the fields of vmm/FAULTS.md [[{kind}]]",
                one_line(&e.to_string())
            )]
        })?;
        alone.validate().map_err(|e| {
            e.0.iter()
                .map(|line| {
                    let prefix = format!("{kind}[0]: ");
                    line.strip_prefix(&prefix).unwrap_or(line).to_string()
                })
                .collect::<Vec<_>>()
        })?;
        Ok(rule)
    }

    /// The rule's action name as in `vmm/FAULTS.md` (`eio`, `delay`, `drop`, ...).
    pub fn action(&self) -> String {
        let value = match self {
            FaultRule::Block(r) => serde_json::to_value(r.action),
            FaultRule::Net(r) => serde_json::to_value(r.action),
        };
        value
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
