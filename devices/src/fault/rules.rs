//! The rules file (`vmm --faults FILE`, TOML) and the control API's `set_faults` body (the
//! same structure as JSON): what to break, where, how often. Parsing is strict (unknown
//! fields are errors) and validation reports every mistake, one line each, naming the rule,
//! the field and the fix. `vmm/FAULTS.md` documents every field.

use serde::{Deserialize, Serialize};

/// Which block requests a rule looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockOpKind {
    /// Reads (`VIRTIO_BLK_T_IN`).
    Read,
    /// Writes (`VIRTIO_BLK_T_OUT`).
    Write,
    /// Flushes (`VIRTIO_BLK_T_FLUSH`).
    Flush,
    /// Reads, writes and flushes.
    Any,
}

/// What a block rule does to a request it fires on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockActionKind {
    /// Fail the request (`VIRTIO_BLK_S_IOERR`) without touching the disk.
    Eio,
    /// Carry the request out, complete it `delay_ms` later.
    Delay,
    /// Write only the first `keep_bytes` bytes, then fail the request.
    Torn,
    /// Flip one bit in every returned sector inside the rule's range (the disk is untouched).
    Corrupt,
    /// Acknowledge the write and never store it.
    Lose,
}

/// One `[[block]]` rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockRule {
    /// Disk index in `--disk` order; omitted = every disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<usize>,
    /// Request type; omitted = what the action applies to (`any` for eio and delay, `write`
    /// for torn and lose, `read` for corrupt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<BlockOpKind>,
    /// Start of the byte range [from, to) a request must overlap; omitted = 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// End of the byte range (exclusive); omitted = end of disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
    /// What happens to a request the rule fires on.
    pub action: BlockActionKind,
    /// `delay`: how long the completion is held back, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// `torn`: how many bytes of the write reach the disk before the request fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_bytes: Option<u64>,
    /// Let the first `after` matching requests through.
    #[serde(default)]
    pub after: u64,
    /// Stop firing after `count` hits (0 = no limit).
    #[serde(default)]
    pub count: u64,
    /// Chance that a matching request (past `after`, within `count`) is hit.
    #[serde(default = "certain")]
    pub probability: f64,
}

/// Which frames a net rule looks at, relative to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetDirKind {
    /// Frames the guest sends.
    Tx,
    /// Frames about to reach the guest.
    Rx,
    /// Both.
    Both,
}

/// What a net rule does to a frame it fires on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetActionKind {
    /// The frame vanishes.
    Drop,
    /// The frame goes on `delay_ms` later (frames behind it are not held up).
    Delay,
    /// The frame goes on twice.
    Duplicate,
    /// One bit of the frame is flipped.
    Corrupt,
    /// The frame is held back and goes on right after the next frame in the same direction.
    Reorder,
}

/// One `[[net]]` rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetRule {
    /// NIC index in `--net` order; omitted = every NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic: Option<usize>,
    /// Direction; omitted = both.
    #[serde(default = "both")]
    pub dir: NetDirKind,
    /// What happens to a frame the rule fires on.
    pub action: NetActionKind,
    /// `delay`: milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Only frames with this EtherType (e.g. 0x0800 IPv4, 0x0806 ARP, 0x86dd IPv6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ethertype: Option<u16>,
    /// Only IPv4/IPv6 frames carrying this protocol (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_proto: Option<u8>,
    /// Only TCP/UDP frames with this source or destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Let the first `after` matching frames through.
    #[serde(default)]
    pub after: u64,
    /// Stop firing after `count` hits (0 = no limit).
    #[serde(default)]
    pub count: u64,
    /// Chance that a matching frame is hit.
    #[serde(default = "certain")]
    pub probability: f64,
}

/// What a vsock rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VsockActionKind {
    /// Reset the connection: the guest gets an RST, the host side's stream is closed.
    Reset,
}

/// One `[[vsock]]` rule: looked at for every packet the guest sends on an open connection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockRule {
    /// Only connections with this port on either end (guest or host side); omitted = all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// What happens to the connection.
    pub action: VsockActionKind,
    /// Let the first `after` matching packets through.
    #[serde(default)]
    pub after: u64,
    /// Stop firing after `count` hits (0 = no limit).
    #[serde(default)]
    pub count: u64,
    /// Chance that a matching packet resets its connection.
    #[serde(default = "certain")]
    pub probability: f64,
}

/// A whole rules file. The empty value (no rules) lets everything through.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRules {
    /// Seed of every random decision: the same seed and request sequence give the same faults.
    #[serde(default)]
    pub seed: u64,
    /// Block device rules, tried in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block: Vec<BlockRule>,
    /// Network rules, tried in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub net: Vec<NetRule>,
    /// vsock rules, tried in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vsock: Vec<VsockRule>,
}

fn certain() -> f64 {
    1.0
}

fn both() -> NetDirKind {
    NetDirKind::Both
}

/// Longest accepted delay: an hour is already "the disk hangs".
pub const MAX_DELAY_MS: u64 = 3_600_000;

/// Why a rules file or API body was refused: one line per mistake.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct RulesError(pub Vec<String>);

impl FaultRules {
    /// Parses and validates a TOML rules file (`origin` names it in errors).
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, RulesError> {
        let rules: FaultRules = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| format!(" line {}", line_of(text, s.start)))
                .unwrap_or_default();
            RulesError(vec![format!(
                "{origin}{at}: {}; see vmm/FAULTS.md for the format",
                one_line(e.message())
            )])
        })?;
        rules.validate().map_err(|RulesError(lines)| {
            RulesError(
                lines
                    .into_iter()
                    .map(|l| format!("{origin}: {l}"))
                    .collect(),
            )
        })?;
        Ok(rules)
    }

    /// Parses and validates the JSON form (control API).
    pub fn from_json(value: serde_json::Value) -> Result<Self, RulesError> {
        let rules: FaultRules = serde_json::from_value(value).map_err(|e| {
            RulesError(vec![format!(
                "fault rules: {}; see vmm/FAULTS.md for the format",
                one_line(&e.to_string())
            )])
        })?;
        rules.validate()?;
        Ok(rules)
    }

    /// True when there is nothing to inject.
    pub fn is_empty(&self) -> bool {
        self.block.is_empty() && self.net.is_empty() && self.vsock.is_empty()
    }

    /// Checks every rule; all mistakes are reported, one line each.
    pub fn validate(&self) -> Result<(), RulesError> {
        let mut errors = Vec::new();
        for (i, r) in self.block.iter().enumerate() {
            check_block(&format!("block[{i}]"), r, &mut errors);
        }
        for (i, r) in self.net.iter().enumerate() {
            let name = format!("net[{i}]");
            check_trigger(&name, r.probability, &mut errors);
            check_delay(
                &name,
                r.action == NetActionKind::Delay,
                r.delay_ms,
                &mut errors,
            );
            if r.port.is_some() && r.ip_proto.is_some_and(|p| p != 6 && p != 17) {
                errors.push(format!(
                    "{name}: port only matches TCP (ip_proto = 6) or UDP (17) frames; drop ip_proto or port"
                ));
            }
        }
        for (i, r) in self.vsock.iter().enumerate() {
            check_trigger(&format!("vsock[{i}]"), r.probability, &mut errors);
        }
        verdict(errors)
    }

    /// Checks that every rule names a device the VM has (`disks` disks, `nics` NICs).
    pub fn check_devices(&self, disks: usize, nics: usize) -> Result<(), RulesError> {
        let mut errors = Vec::new();
        for (i, r) in self.block.iter().enumerate() {
            if let Some(d) = r.disk.filter(|d| *d >= disks) {
                errors.push(format!(
                    "block[{i}]: disk {d} does not exist (the VM has {disks} disk(s), numbered from 0 in --disk order)"
                ));
            }
        }
        for (i, r) in self.net.iter().enumerate() {
            if let Some(n) = r.nic.filter(|n| *n >= nics) {
                errors.push(format!(
                    "net[{i}]: nic {n} does not exist (the VM has {nics} NIC(s), numbered from 0 in --net order)"
                ));
            }
        }
        verdict(errors)
    }
}

/// `Ok` when no mistake was found, else every mistake found (validation never stops at the
/// first).
fn verdict(errors: Vec<String>) -> Result<(), RulesError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(RulesError(errors))
    }
}

impl BlockRule {
    /// The request type the rule matches, with the action's default filled in.
    pub fn effective_op(&self) -> BlockOpKind {
        self.op.unwrap_or(match self.action {
            BlockActionKind::Eio | BlockActionKind::Delay => BlockOpKind::Any,
            BlockActionKind::Torn | BlockActionKind::Lose => BlockOpKind::Write,
            BlockActionKind::Corrupt => BlockOpKind::Read,
        })
    }
}

fn check_block(name: &str, r: &BlockRule, errors: &mut Vec<String>) {
    check_trigger(name, r.probability, errors);
    check_delay(name, r.action == BlockActionKind::Delay, r.delay_ms, errors);
    if let (Some(from), Some(to)) = (r.from, r.to) {
        if to <= from {
            errors.push(format!(
                "{name}: the range is empty (from = {from} >= to = {to}); make `to` larger than `from`"
            ));
        }
    }
    let op = r.effective_op();
    if op == BlockOpKind::Flush && (r.from.is_some() || r.to.is_some()) {
        errors.push(format!(
            "{name}: flush requests have no byte range, so from/to never match them; remove from and to"
        ));
    }
    let action = serde_json::to_string(&r.action).unwrap_or_default();
    let op_name = serde_json::to_string(&op).unwrap_or_default();
    match r.action {
        BlockActionKind::Torn | BlockActionKind::Lose if op != BlockOpKind::Write => {
            errors.push(format!(
                "{name}: action {action} applies to writes only, not op = {op_name}; set op = \"write\" or omit op"
            ));
        }
        BlockActionKind::Corrupt if op != BlockOpKind::Read => {
            errors.push(format!(
                "{name}: action \"corrupt\" changes what reads return, not op = {op_name}; set op = \"read\" or omit op"
            ));
        }
        _ => {}
    }
    match (r.action, r.keep_bytes) {
        (BlockActionKind::Torn, None) => errors.push(format!(
            "{name}: action \"torn\" needs keep_bytes (how many bytes of the write land), e.g. keep_bytes = 2048"
        )),
        (BlockActionKind::Torn, Some(_)) | (_, None) => {}
        (_, Some(_)) => errors.push(format!(
            "{name}: keep_bytes only applies to action = \"torn\"; remove it"
        )),
    }
}

fn check_delay(name: &str, is_delay: bool, delay_ms: Option<u64>, errors: &mut Vec<String>) {
    match (is_delay, delay_ms) {
        (true, None) => errors.push(format!(
            "{name}: action \"delay\" needs delay_ms (milliseconds), e.g. delay_ms = 200"
        )),
        (true, Some(0)) => errors.push(format!(
            "{name}: delay_ms = 0 delays nothing; give a positive number of milliseconds"
        )),
        (true, Some(ms)) if ms > MAX_DELAY_MS => errors.push(format!(
            "{name}: delay_ms = {ms} is longer than an hour ({MAX_DELAY_MS}); use a smaller delay"
        )),
        (false, Some(_)) => errors.push(format!(
            "{name}: delay_ms only applies to action = \"delay\"; remove it"
        )),
        _ => {}
    }
}

fn check_trigger(name: &str, probability: f64, errors: &mut Vec<String>) {
    if !(0.0..=1.0).contains(&probability) {
        errors.push(format!(
            "{name}: probability = {probability} is not between 0 and 1; use e.g. 0.1 for one in ten"
        ));
    }
}

fn line_of(text: &str, byte: usize) -> usize {
    text.get(..byte).map_or(0, |t| t.matches('\n').count()) + 1
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
