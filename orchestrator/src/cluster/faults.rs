//! Device faults of a node through its `vmm` (vmm/FAULTS.md, vmm/API.md): rules bound from
//! spec names to the `vmm`'s disk and NIC indices, kept by the node so that every start of
//! its `vmm` gets them again (`--faults`), a power cut, and the node's fault log.
//!
//! A `vmm` takes its rules as one set (`set_faults` replaces them all), so adding a rule
//! sends the node's whole set again and every rule's counts start afresh.

use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

use devices::fault::{FaultRecord, FaultRules};

use super::control;
use super::error::{ClusterError, Result};
use super::node::Node;
use crate::spec::{FaultRule, FaultTarget};

/// What a [`Node::power_cut`] did to the node's `cache=writeback` disks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PowerCut {
    /// Unflushed 4 KiB blocks dropped (`None`: the `vmm` ended before it could say).
    pub lost_blocks: Option<u64>,
    /// Unflushed blocks that reached the disk anyway (the seeded `keep` fraction).
    pub kept_blocks: Option<u64>,
    /// Disks with a write cache.
    pub cached_disks: Option<u64>,
}

impl PowerCut {
    /// One line for reports.
    pub fn describe(&self) -> String {
        match (self.lost_blocks, self.kept_blocks, self.cached_disks) {
            (Some(lost), Some(kept), Some(disks)) => format!(
                "power cut: {lost} unflushed 4 KiB block(s) lost, {kept} kept, on {disks} \
                 write-back disk(s)"
            ),
            _ => "power cut: the vmm ended before reporting what was lost (see vmm.log)".into(),
        }
    }
}

impl Node {
    /// The fault rules the node has: in force in its `vmm` while it runs, and passed to
    /// every start (`vmm --faults`).
    pub fn fault_rules(&self) -> &FaultRules {
        &self.fault_rules
    }

    /// Binds `rule` to the device `target` names (the spec's disk or network name) and adds
    /// it to the node's rules; `seed`, if given, becomes the node's seed. Returns where it
    /// went, e.g. `block[0] on etcd (disk1)`.
    pub fn add_fault(
        &mut self,
        target: &FaultTarget,
        rule: FaultRule,
        seed: Option<u64>,
    ) -> Result<String> {
        let mut rules = self.fault_rules.clone();
        if let Some(seed) = seed {
            rules.seed = seed;
        }
        let bad = |reason: String| ClusterError::BadNode {
            node: self.name().to_string(),
            reason,
        };
        let placed = match (target, rule) {
            (FaultTarget::Disk(name), FaultRule::Block(mut r)) => {
                let index = self.launch.disk_index(name).ok_or_else(|| {
                    bad(format!(
                        "it has no disk named {name:?} (its disks: {})",
                        self.disk_names()
                    ))
                })?;
                r.disk = Some(index);
                rules.block.push(r);
                format!("block[{}] on {name} (disk{index})", rules.block.len() - 1)
            }
            (FaultTarget::Network(net), FaultRule::Net(mut r)) => {
                let index = self
                    .launch
                    .nic_index(net)
                    .ok_or_else(|| bad(format!("it has no interface on network {net:?}")))?;
                r.nic = Some(index);
                rules.net.push(r);
                format!("net[{}] on {net} (nic{index})", rules.net.len() - 1)
            }
            (target, _) => {
                return Err(bad(format!(
                    "the rule's kind does not fit {target}: a disk takes a block rule, a \
                     network a net rule"
                )))
            }
        };
        self.set_fault_rules(rules)?;
        Ok(placed)
    }

    /// Removes every fault rule (the seed stays), in the running `vmm` and for later starts.
    pub fn clear_faults(&mut self) -> Result<()> {
        let rules = FaultRules {
            seed: self.fault_rules.seed,
            ..FaultRules::default()
        };
        self.set_fault_rules(rules)
    }

    /// Replaces the node's fault rules: sent to the `vmm` at once when it runs (which checks
    /// them; a refusal changes nothing), and passed to every later start.
    pub fn set_fault_rules(&mut self, rules: FaultRules) -> Result<()> {
        if self.is_running() {
            let body = serde_json::to_value(&rules).map_err(|e| ClusterError::BadNode {
                node: self.name().to_string(),
                reason: format!("cannot encode its fault rules: {e}"),
            })?;
            self.api_call(serde_json::json!({ "op": "set_faults", "rules": body }))?;
        }
        self.fault_rules = rules;
        Ok(())
    }

    /// The rules in force in the running `vmm` with their `matched` and `hits` counts
    /// (control API `faults`).
    pub fn fault_report(&mut self) -> Result<serde_json::Value> {
        self.require_running()?;
        let reply = self.api_call(serde_json::json!({ "op": "faults" }))?;
        Ok(reply["faults"].clone())
    }

    /// Pulls the plug (control API `power_cut`): every `cache=writeback` disk loses its
    /// unflushed writes (a `keep` fraction of the blocks, chosen from the node's seed,
    /// survives), the VM ends, and the node is stopped; [`Node::start`] boots it again on
    /// the same disks.
    pub fn power_cut(&mut self, keep: f64) -> Result<PowerCut> {
        self.require_running()?;
        tracing::info!(node = self.name(), keep, "power cut");
        let request = serde_json::json!({ "op": "power_cut", "keep": keep });
        let cut = match self.api_call(request) {
            Ok(reply) => {
                let field = |k: &str| reply["power_cut"][k].as_u64();
                PowerCut {
                    lost_blocks: field("lost_blocks"),
                    kept_blocks: field("kept_blocks"),
                    cached_disks: field("cached_disks"),
                }
            }
            // The vmm may end before its reply is out; the cut happened all the same.
            Err(ClusterError::Control { reason, .. })
                if reason == control::CLOSED_WITHOUT_REPLY =>
            {
                PowerCut::default()
            }
            Err(e) => return Err(e),
        };
        if !self.wait_exit(self.timeouts.stop_phase) {
            tracing::warn!(
                node = self.name(),
                "vmm still runs after power_cut; killing it"
            );
        }
        self.kill_and_clean();
        Ok(cut)
    }

    /// The fault log's length now: [`Node::faults_since`] from here gives what comes next.
    pub fn fault_log_len(&self) -> u64 {
        std::fs::metadata(&self.paths.fault_log).map_or(0, |m| m.len())
    }

    /// The faults the node's `vmm`s injected since the log had `offset` bytes (whole lines
    /// only; a line still being written is left for the next call).
    pub fn faults_since(&self, offset: u64) -> Vec<FaultRecord> {
        let mut text = String::new();
        let read = std::fs::File::open(&self.paths.fault_log).and_then(|mut f| {
            f.seek(SeekFrom::Start(offset))?;
            f.read_to_string(&mut text)
        });
        if read.is_err() {
            return Vec::new();
        }
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        whole
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// `--faults FILE` for a start with the node's rules (written to `faults.toml` in the
    /// node directory); nothing, and no file, when it has none.
    pub(super) fn faults_file_args(&self) -> Result<Vec<OsString>> {
        let file = &self.paths.faults_file;
        if self.fault_rules == FaultRules::default() {
            return match std::fs::remove_file(file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(ClusterError::io("removing", file)(e))
                }
                _ => Ok(Vec::new()),
            };
        }
        let text = toml::to_string(&self.fault_rules).map_err(|e| ClusterError::BadNode {
            node: self.name().to_string(),
            reason: format!("cannot write its fault rules as TOML: {e}"),
        })?;
        std::fs::write(file, text).map_err(ClusterError::io("writing", file))?;
        Ok(vec!["--faults".into(), file.clone().into_os_string()])
    }

    fn api_call(&mut self, request: serde_json::Value) -> Result<serde_json::Value> {
        let op = request["op"].as_str().unwrap_or("?").to_string();
        let timeout = self.timeouts.stop_phase.max(Duration::from_secs(5));
        control::call(&self.paths.api_sock, &request, timeout).map_err(|reason| {
            ClusterError::Control {
                node: self.name().to_string(),
                op,
                reason,
            }
        })
    }

    fn disk_names(&self) -> String {
        let names: Vec<&str> = self
            .launch
            .disks
            .iter()
            .filter_map(|d| d.id.as_deref())
            .collect();
        if names.is_empty() {
            "none named".into()
        } else {
            names.join(", ")
        }
    }
}
