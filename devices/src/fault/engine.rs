//! The shared rule set: rules, per-rule counters, the seed and the log, behind one lock that
//! only requests on a device with rules ever take. Devices hold per-device hooks
//! ([`BlockFaults`](super::BlockFaults), [`NetFaults`](super::NetFaults),
//! [`VsockFaults`](super::VsockFaults)); the control API replaces rules here at runtime.

use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::draw::{Draw, Stream};
use super::log::{FaultLog, FaultRecord};
use super::rules::{BlockRule, FaultRules, NetRule, RulesError, VsockRule};

/// Bits of [`FaultEngine::armed`]: which device kinds have rules.
pub(crate) const ARMED_BLOCK: u8 = 1;
pub(crate) const ARMED_NET: u8 = 2;
pub(crate) const ARMED_VSOCK: u8 = 4;

/// How often a rule matched and how often it fired.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleCounters {
    /// Requests (frames, packets) that matched the rule's filters.
    pub matched: u64,
    /// Of those, how many the rule acted on.
    pub hits: u64,
}

/// A rule with its counters, as the `faults` API op reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleReport<R> {
    #[serde(flatten)]
    pub rule: R,
    #[serde(flatten)]
    pub counters: RuleCounters,
}

/// The rules in force with their counters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultReport {
    pub seed: u64,
    pub block: Vec<RuleReport<BlockRule>>,
    pub net: Vec<RuleReport<NetRule>>,
    pub vsock: Vec<RuleReport<VsockRule>>,
}

pub(crate) struct State {
    pub(crate) rules: FaultRules,
    pub(crate) block: Vec<RuleCounters>,
    pub(crate) net: Vec<RuleCounters>,
    pub(crate) vsock: Vec<RuleCounters>,
    log: Option<FaultLog>,
}

/// Rules, counters and log shared by every device of a VM and the control API.
pub struct FaultEngine {
    state: Mutex<State>,
    /// Which device kinds have rules; read without the lock on every request.
    armed: AtomicU8,
}

impl std::fmt::Debug for FaultEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultEngine")
            .field("armed", &self.armed.load(Ordering::Relaxed))
            .finish()
    }
}

impl FaultEngine {
    /// An engine without rules and without a log: everything passes.
    pub fn new() -> Arc<Self> {
        Arc::new(FaultEngine {
            state: Mutex::new(State {
                rules: FaultRules::default(),
                block: Vec::new(),
                net: Vec::new(),
                vsock: Vec::new(),
                log: None,
            }),
            armed: AtomicU8::new(0),
        })
    }

    /// Appends every injected fault to `path` (JSON lines) from now on.
    pub fn log_to(&self, path: &Path) -> std::io::Result<()> {
        let log = FaultLog::open(path)?;
        self.lock().log = Some(log);
        Ok(())
    }

    /// Replaces every rule (after validating them) and zeroes the counters. Empty rules
    /// clear everything.
    pub fn set_rules(&self, rules: FaultRules) -> Result<(), RulesError> {
        rules.validate()?;
        let mut st = self.lock();
        st.block = vec![RuleCounters::default(); rules.block.len()];
        st.net = vec![RuleCounters::default(); rules.net.len()];
        st.vsock = vec![RuleCounters::default(); rules.vsock.len()];
        let mut armed = 0;
        if !rules.block.is_empty() {
            armed |= ARMED_BLOCK;
        }
        if !rules.net.is_empty() {
            armed |= ARMED_NET;
        }
        if !rules.vsock.is_empty() {
            armed |= ARMED_VSOCK;
        }
        st.rules = rules;
        // Under the lock, so a device that sees the bit also sees the rules.
        self.armed.store(armed, Ordering::Release);
        Ok(())
    }

    /// The rules in force.
    pub fn rules(&self) -> FaultRules {
        self.lock().rules.clone()
    }

    /// The rules in force with how often each matched and fired.
    pub fn report(&self) -> FaultReport {
        let st = self.lock();
        fn zip<R: Clone>(rules: &[R], counters: &[RuleCounters]) -> Vec<RuleReport<R>> {
            rules
                .iter()
                .zip(counters)
                .map(|(rule, counters)| RuleReport {
                    rule: rule.clone(),
                    counters: *counters,
                })
                .collect()
        }
        FaultReport {
            seed: st.rules.seed,
            block: zip(&st.rules.block, &st.block),
            net: zip(&st.rules.net, &st.net),
            vsock: zip(&st.rules.vsock, &st.vsock),
        }
    }

    /// The seed in force (power-cut decisions use it too).
    pub fn seed(&self) -> u64 {
        self.lock().rules.seed
    }

    /// True if rules of `kind` (an `ARMED_*` bit) exist. One atomic load: the fast path.
    #[inline]
    pub(crate) fn armed(&self, kind: u8) -> bool {
        self.armed.load(Ordering::Acquire) & kind != 0
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a record if a log is open.
    pub fn record(&self, record: &FaultRecord) {
        if let Some(log) = &mut self.lock().log {
            log.append(record);
        }
    }
}

impl State {
    /// Writes to the log, if any.
    pub(crate) fn record(&mut self, record: FaultRecord) {
        tracing::debug!(?record, "fault injected");
        if let Some(log) = &mut self.log {
            log.append(&record);
        }
    }
}

/// The trigger shared by every rule: counts the match, then applies `after`, `count` and
/// `probability`. Returns the match's draws when the rule fires.
pub(crate) fn fire(
    seed: u64,
    stream: Stream,
    counters: &mut RuleCounters,
    after: u64,
    count: u64,
    probability: f64,
) -> Option<Draw> {
    let match_no = counters.matched;
    counters.matched += 1;
    if match_no < after || (count > 0 && counters.hits >= count) {
        return None;
    }
    let mut draw = Draw::new(seed, stream, match_no);
    if !draw.chance(probability) {
        return None;
    }
    counters.hits += 1;
    Some(draw)
}
