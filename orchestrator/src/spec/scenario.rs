//! Scenarios: named lists of steps run against a cluster, in order; the first failing step
//! fails the scenario. The vocabulary follows the NixOS test driver's machine API.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A named test scenario.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSpec {
    /// Unique scenario name (`orchestrator run <name>`).
    pub name: String,
    /// What the scenario checks, for people reading reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The steps, run in order.
    pub steps: Vec<Step>,
}

/// One step of a scenario, written as an inline table with an `action` key, e.g.
/// `{ action = "succeed", node = "node01", command = "etcdctl endpoint health" }`.
///
/// `timeout` fields are durations (`"500ms"`, `"30s"`, `"5m"`); when absent the runner's
/// default applies. Commands run through `/bin/sh -c` inside the node, via its agent.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Boots every node not yet running, in dependency waves (see `plan::boot_waves`), and
    /// waits until each node's readiness checks pass before starting the next wave.
    Boot,
    /// Runs a command and records its output; its exit status does not matter.
    Exec {
        /// Node to run on.
        node: String,
        /// Shell command.
        command: String,
    },
    /// Runs a command that must exit 0 (and print `expect`, if given, somewhere in stdout).
    Succeed {
        /// Node to run on.
        node: String,
        /// Shell command.
        command: String,
        /// Text that stdout must contain.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<String>,
    },
    /// Runs a command that must exit non-zero.
    Fail {
        /// Node to run on.
        node: String,
        /// Shell command.
        command: String,
    },
    /// Repeats a command until it exits 0 (and prints `expect`, if given), or times out.
    WaitUntilSucceeds {
        /// Node to run on.
        node: String,
        /// Shell command.
        command: String,
        /// Text that stdout must contain.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<String>,
        /// Give up after this long.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<String>,
    },
    /// Repeats a command until it exits non-zero, or times out.
    WaitUntilFails {
        /// Node to run on.
        node: String,
        /// Shell command.
        command: String,
        /// Give up after this long.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<String>,
    },
    /// Waits until a systemd unit is active.
    WaitForUnit {
        /// Node to check.
        node: String,
        /// Unit name (`etcd` means `etcd.service`).
        unit: String,
        /// Give up after this long.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<String>,
    },
    /// Waits until something listens on a TCP port of the node.
    WaitForPort {
        /// Node to check.
        node: String,
        /// TCP port.
        port: u16,
        /// Give up after this long.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<String>,
    },
    /// Waits until a file exists in the node.
    WaitForFile {
        /// Node to check.
        node: String,
        /// Absolute path in the guest.
        path: String,
        /// Give up after this long.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<String>,
    },
    /// Waits until all of a node's readiness checks pass (e.g. after `start`).
    WaitReady {
        /// Node to check.
        node: String,
        /// Give up after this long.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<String>,
    },
    /// Cuts every link between each node of `nodes` and each node of `from`, both ways.
    Partition {
        /// One side.
        nodes: Vec<String>,
        /// The other side.
        from: Vec<String>,
    },
    /// Drops frames from `from` to `to` only; the other direction still passes.
    Block {
        /// Sending node.
        from: String,
        /// Receiving node.
        to: String,
    },
    /// Removes every partition and block (loss and delay set with `link` stay).
    Heal,
    /// Sets loss and delay on the link from `from` to `to`; absent values are cleared.
    Link {
        /// Sending node.
        from: String,
        /// Receiving node.
        to: String,
        /// Probability 0.0-1.0 that a frame is dropped (seeded, replayable).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        loss: Option<f64>,
        /// Time each frame is held.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delay: Option<String>,
    },
    /// Kills the node's VMM at once (power cut: no shutdown, unflushed writes lost).
    Crash {
        /// Node to crash.
        node: String,
    },
    /// Starts a stopped or crashed node again with the same disks (does not wait for ready).
    Start {
        /// Node to start.
        node: String,
    },
    /// Powers the node off cleanly (through its agent, falling back to the VMM) and waits
    /// until its VMM has exited.
    Shutdown {
        /// Node to shut down.
        node: String,
    },
    /// Pauses every vCPU of the node (it stops answering, its peers see it hang).
    Freeze {
        /// Node to freeze.
        node: String,
    },
    /// Resumes a frozen node.
    Thaw {
        /// Node to thaw.
        node: String,
    },
    /// Adds a fault rule for one disk or NIC of the node (`vmm/FAULTS.md`), on top of the
    /// rules the node already has: `{ action = "fault", node = "node02", disk = "etcd",
    /// rule = { op = "flush", action = "eio" } }`. The node's rules go to its `vmm` at once
    /// (all of them, so every rule's counts start afresh) and again whenever it starts,
    /// until `clear_faults`: a faulty disk stays faulty across `crash`, `power_cut` and
    /// `start`. A node that is not running gets them when it starts.
    Fault {
        /// Node whose device misbehaves.
        node: String,
        /// A disk of the node by its `name` (`root` for the image's root disk): `rule` is a
        /// `[[block]]` rule.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disk: Option<String>,
        /// A network the node is attached to: `rule` is a `[[net]]` rule for that NIC.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<String>,
        /// The rule: the fields of a `[[block]]` or `[[net]]` rule in `vmm/FAULTS.md`
        /// (`action`, `op`, `from`, `to`, `delay_ms`, `keep_bytes`, `dir`, `ethertype`,
        /// `ip_proto`, `port`, `after`, `count`, `probability`), without `disk` or `nic`.
        rule: serde_json::Map<String, serde_json::Value>,
        /// Seed of the node's random fault decisions (probabilities, corrupted bits, which
        /// unflushed blocks a power cut keeps); the node's seed stays until changed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seed: Option<u64>,
    },
    /// Removes every fault rule of the node (also for its next starts).
    ClearFaults {
        /// Node to clear.
        node: String,
    },
    /// Pulls the node's plug (`vmm` API `power_cut`): its `cache = "writeback"` disks lose
    /// every write the guest has not flushed, then the VM ends. `start` boots it again on
    /// the same disks.
    PowerCut {
        /// Node to cut.
        node: String,
        /// Fraction (0.0-1.0) of unflushed 4 KiB blocks that reach the disk anyway, chosen
        /// from the node's seed, as a disk writing back its cache in its own order would
        /// leave. Absent: 0, every unflushed write is lost.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keep: Option<f64>,
    },
    /// Copies a host file or directory into the node.
    CopyTo {
        /// Node to copy into.
        node: String,
        /// Host path, relative to the spec file's directory unless absolute.
        source: String,
        /// Absolute path in the guest.
        destination: String,
    },
    /// Copies a file or directory out of the node into the run's output directory.
    CopyFrom {
        /// Node to copy from.
        node: String,
        /// Absolute path in the guest.
        source: String,
        /// Path relative to the run's output directory.
        destination: String,
    },
    /// Waits a fixed time.
    Sleep {
        /// How long.
        duration: String,
    },
}

impl Step {
    /// The action name as written in specs (`wait_for_unit`, ...).
    pub fn action(&self) -> &'static str {
        match self {
            Step::Boot => "boot",
            Step::Exec { .. } => "exec",
            Step::Succeed { .. } => "succeed",
            Step::Fail { .. } => "fail",
            Step::WaitUntilSucceeds { .. } => "wait_until_succeeds",
            Step::WaitUntilFails { .. } => "wait_until_fails",
            Step::WaitForUnit { .. } => "wait_for_unit",
            Step::WaitForPort { .. } => "wait_for_port",
            Step::WaitForFile { .. } => "wait_for_file",
            Step::WaitReady { .. } => "wait_ready",
            Step::Partition { .. } => "partition",
            Step::Block { .. } => "block",
            Step::Heal => "heal",
            Step::Link { .. } => "link",
            Step::Crash { .. } => "crash",
            Step::Start { .. } => "start",
            Step::Shutdown { .. } => "shutdown",
            Step::Freeze { .. } => "freeze",
            Step::Thaw { .. } => "thaw",
            Step::Fault { .. } => "fault",
            Step::ClearFaults { .. } => "clear_faults",
            Step::PowerCut { .. } => "power_cut",
            Step::CopyTo { .. } => "copy_to",
            Step::CopyFrom { .. } => "copy_from",
            Step::Sleep { .. } => "sleep",
        }
    }
}
