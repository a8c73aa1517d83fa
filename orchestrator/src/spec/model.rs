//! The cluster spec as written in TOML: networks and nodes.
//!
//! Values that need parsing (sizes, subnets, addresses) stay text here so that validation
//! can report them with file, line and field; the accessors parse them, and after a spec
//! has validated they do not fail.

use ipnet::Ipv4Net;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::scenario::ScenarioSpec;
use super::units::{parse_size, UnitError};

/// A whole cluster: networks, nodes and the scenarios that run on them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Name of the cluster (shown in reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The L2 networks; each becomes one userspace switch.
    #[serde(default, rename = "network")]
    pub networks: Vec<NetworkSpec>,
    /// The machines.
    #[serde(default, rename = "node")]
    pub nodes: Vec<NodeSpec>,
    /// Named test scenarios.
    #[serde(default, rename = "scenario")]
    pub scenarios: Vec<ScenarioSpec>,
}

/// One L2 network (a switch) with its IPv4 subnet.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Unique network name, referenced by nodes.
    pub name: String,
    /// IPv4 subnet in CIDR form, e.g. `10.0.0.0/24`.
    pub subnet: String,
}

impl NetworkSpec {
    /// The parsed subnet.
    pub fn subnet(&self) -> Result<Ipv4Net, ipnet::AddrParseError> {
        self.subnet.parse()
    }
}

/// What a node is for; scenarios and reports group nodes by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Runs the control plane (e.g. an etcd member).
    ControlPlane,
    /// Serves storage to other nodes (e.g. NFS).
    Storage,
    /// Runs the workload.
    Worker,
    /// Fronts the workload (e.g. a load balancer).
    Gateway,
    /// Drives traffic or tests from inside the cluster.
    Client,
}

/// One virtual machine.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Unique node name: lowercase letters, digits and `-`, starting with a letter.
    pub name: String,
    /// What the node is for.
    pub role: Role,
    /// Name of the guest image (kernel + initramfs + root disk) the node boots.
    pub image: String,
    /// Number of vCPUs (1-64).
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    /// Guest memory in MiB (at least 64).
    #[serde(default = "default_memory")]
    pub memory: u32,
    /// Extra disks besides the root disk, in order (the guest sees them as vdb, vdc, ...).
    #[serde(default)]
    pub disks: Vec<DiskSpec>,
    /// Network attachments, one interface each (eth0, eth1, ... in this order).
    #[serde(default)]
    pub networks: Vec<NodeNetwork>,
    /// Nodes that must be up and ready before this one boots.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Checks that must all pass before the node counts as ready.
    #[serde(default)]
    pub ready: Vec<ReadinessCheck>,
    /// Shell script run once through the agent (`/bin/sh -e`), on the node's first boot
    /// and before its readiness checks: configures and starts the node's services. What it
    /// writes to the disks persists across crash and restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<String>,
}

fn default_cpus() -> u32 {
    1
}

fn default_memory() -> u32 {
    512
}

/// An extra disk of a node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// Size with a binary unit: `512M`, `1G`, `1GiB`, `4096K`, or plain bytes (multiple of 512).
    pub size: String,
    /// Optional name, unique within the node (the disk's serial, used in scenarios).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Make a filesystem on the new disk on the host (labelled with the disk's name, so
    /// the guest can mount `LABEL=<name>`); absent: the disk starts empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DiskFormat>,
    /// `writeback`: the VMM keeps a volatile write cache in front of the disk (what reaches
    /// it is durable only once the guest flushes; a `power_cut` step drops the rest).
    /// Absent or `writethrough`: every completed write is in the disk file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<DiskCache>,
}

/// How the VMM writes a disk (`vmm --disk PATH,cache=...`, see `vmm/FAULTS.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiskCache {
    /// Every completed write is in the disk file (the default).
    Writethrough,
    /// A volatile write cache: writes reach the file when the guest flushes; a power cut
    /// loses the unflushed ones.
    Writeback,
}

/// A filesystem the orchestrator can make on a data disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// ext4 by `mkfs.ext4` on the host (sparse: costs no disk space until written).
    Ext4,
}

impl DiskSpec {
    /// Whether the VMM gives this disk a volatile write cache.
    pub fn writeback(&self) -> bool {
        self.cache == Some(DiskCache::Writeback)
    }

    /// Size in bytes.
    pub fn size_bytes(&self) -> Result<u64, UnitError> {
        parse_size(&self.size)
    }
}

/// A node's interface on a network.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeNetwork {
    /// Name of a `[[network]]`.
    pub network: String,
    /// The node's IPv4 address with prefix length, inside the network's subnet: `10.0.0.11/24`.
    pub address: String,
}

impl NodeNetwork {
    /// The parsed address.
    pub fn address(&self) -> Result<Ipv4Net, ipnet::AddrParseError> {
        self.address.parse()
    }
}

/// A check run inside the node (through its agent) that must pass for the node to be ready.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadinessCheck {
    /// The systemd unit is active: `{ unit = "etcd" }`.
    Unit(String),
    /// Something listens on this TCP port: `{ port = 2379 }`.
    Port(u16),
    /// This file exists (absolute path): `{ file = "/run/nfs.ready" }`.
    File(String),
    /// This shell command exits 0: `{ command = "etcdctl endpoint health" }`.
    Command(String),
}

impl ClusterSpec {
    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The network named `name`.
    pub fn network(&self, name: &str) -> Option<&NetworkSpec> {
        self.networks.iter().find(|n| n.name == name)
    }

    /// The scenario named `name`.
    pub fn scenario(&self, name: &str) -> Option<&ScenarioSpec> {
        self.scenarios.iter().find(|s| s.name == name)
    }
}
