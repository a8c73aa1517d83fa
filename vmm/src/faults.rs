//! The VM's fault injection: one rule engine shared by every device and the control API
//! (`set_faults`, `faults`), rules from `--faults FILE` checked against the VM's devices,
//! the fault log, and the disks' write caches for `power_cut`. See `FAULTS.md`.
//!
//! Rules, seed and counters are host configuration, not machine state: a snapshot does not
//! hold them, and a restored VM starts with the rules of its own `--faults` (none without),
//! counters at zero.

use std::path::Path;
use std::sync::{Arc, Mutex};

use devices::fault::{
    BlockFaults, FaultEngine, FaultReport, FaultRules, NetFaults, RulesError, VsockFaults,
};
use devices::virtio::block::backend::{CacheHandle, PowerCutReport};
use serde::{Deserialize, Serialize};

use crate::Error;

/// What a power cut did to the VM's disks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerCutSummary {
    /// Unflushed 4 KiB blocks dropped, over every `cache=writeback` disk.
    pub lost_blocks: u64,
    /// Unflushed blocks that reached their disk anyway (the seeded subset).
    pub kept_blocks: u64,
    /// Disks with a write cache.
    pub cached_disks: usize,
}

/// Checks a power cut's `keep` fraction.
pub fn check_keep(keep: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&keep) {
        Ok(())
    } else {
        Err(format!(
            "power_cut keep = {keep} is not between 0 and 1; use e.g. 0.5 for half"
        ))
    }
}

/// Fault rules, log and write caches of one VM.
pub struct VmFaults {
    engine: Arc<FaultEngine>,
    disks: usize,
    nics: usize,
    /// Write cache of each disk in `--disk` order (`None`: write-through).
    caches: Mutex<Vec<Option<CacheHandle>>>,
}

impl VmFaults {
    /// Loads the rules file `rules` (checked against a VM of `disks` disks and `nics` NICs)
    /// and opens the fault log `log`; both are optional.
    pub fn new(
        rules: Option<&Path>,
        log: Option<&Path>,
        disks: usize,
        nics: usize,
    ) -> Result<Self, Error> {
        let engine = FaultEngine::new();
        if let Some(path) = log {
            engine
                .log_to(path)
                .map_err(|e| Error::Config(format!("--fault-log {}: {e}", path.display())))?;
        }
        let faults = VmFaults {
            engine,
            disks,
            nics,
            caches: Mutex::new(Vec::new()),
        };
        if let Some(path) = rules {
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::Config(format!(
                    "--faults {origin}: cannot read it ({e}): check the path"
                ))
            })?;
            let rules =
                FaultRules::from_toml(&text, &origin).map_err(|e| Error::Config(e.to_string()))?;
            faults.set_rules(rules).map_err(|e| {
                Error::Config(
                    e.0.iter()
                        .map(|l| format!("{origin}: {l}"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                )
            })?;
        }
        Ok(faults)
    }

    /// Replaces every rule (empty rules clear them); rules naming a disk or NIC the VM does
    /// not have are refused.
    pub fn set_rules(&self, rules: FaultRules) -> Result<(), RulesError> {
        rules.check_devices(self.disks, self.nics)?;
        self.engine.set_rules(rules)
    }

    /// The rules in force with their hit counts.
    pub fn report(&self) -> FaultReport {
        self.engine.report()
    }

    /// The fault hook of disk `index`.
    pub fn block(&self, index: usize) -> BlockFaults {
        BlockFaults::new(self.engine.clone(), index)
    }

    /// The fault hook of NIC `index`.
    pub fn net(&self, index: usize) -> NetFaults {
        NetFaults::new(self.engine.clone(), index)
    }

    /// The vsock device's fault hook.
    pub fn vsock(&self) -> VsockFaults {
        VsockFaults::new(self.engine.clone())
    }

    /// Records disk `index`'s write cache (disks are added in order).
    pub(crate) fn add_disk(&self, cache: Option<CacheHandle>) {
        self.caches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(cache);
    }

    /// Pulls the plug on every disk: unflushed writes in write caches are dropped, except
    /// a seeded subset where each 4 KiB block survives with probability `keep`.
    pub fn power_cut(&self, keep: f64) -> Result<PowerCutSummary, String> {
        check_keep(keep)?;
        let seed = self.engine.seed();
        let caches = self.caches.lock().unwrap_or_else(|e| e.into_inner());
        let mut summary = PowerCutSummary::default();
        for (disk, cache) in caches.iter().enumerate() {
            let Some(cache) = cache else { continue };
            summary.cached_disks += 1;
            let PowerCutReport {
                lost_blocks,
                kept_blocks,
            } = cache
                .power_cut(seed, disk, keep)
                .map_err(|e| format!("disk {disk}: writing the surviving blocks failed: {e}"))?;
            summary.lost_blocks += lost_blocks;
            summary.kept_blocks += kept_blocks;
        }
        Ok(summary)
    }

    /// An orderly end: every write cache still powered is written back.
    pub(crate) fn flush_caches(&self) {
        let caches = self.caches.lock().unwrap_or_else(|e| e.into_inner());
        for (disk, cache) in caches.iter().enumerate() {
            if let Some(c) = cache.as_ref().filter(|c| c.is_powered()) {
                if let Err(e) = c.flush() {
                    tracing::error!("disk {disk}: writing the write cache back failed: {e}");
                }
            }
        }
    }
}
