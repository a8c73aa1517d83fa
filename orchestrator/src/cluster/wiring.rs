//! Naming switch ports after nodes.
//!
//! Kiln's `vmm` gives each `--net switch=...` interface a socket bound to the abstract
//! address `\0kiln-net-<pid>-<n>`, `n` counting the switch interfaces of that process from 0
//! in command-line order (devices/src/virtio/net/switch.rs). The orchestrator spawns the
//! `vmm` and knows its pid, so it attaches that address under the node's name right after
//! the spawn, before the guest can send a frame: link rules apply by node name from the
//! first frame on, with no guessing from traffic. Once the `vmm` is up, [`check_bound`]
//! confirms each predicted address really is bound (read from `/proc/net/unix`), so a change
//! of that convention fails loudly instead of leaving rules silently unapplied.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::SocketAddr;
use std::sync::Arc;

use super::error::{ClusterError, Result};
use crate::switch::SwitchHandle;

/// The abstract socket name of the `nic`-th switch interface of the `vmm` with `pid`.
pub fn vmm_port_name(pid: u32, nic: usize) -> String {
    format!("kiln-net-{pid}-{nic}")
}

/// Names the ports of a freshly spawned `vmm` after `node` on each of its switches (one
/// per interface, in interface order), replacing the ports of an earlier run of the node.
pub fn attach(node: &str, pid: u32, switches: &[(String, Arc<SwitchHandle>)]) -> Result<()> {
    for (nic, (network, switch)) in switches.iter().enumerate() {
        switch.detach(node);
        let addr =
            SocketAddr::from_abstract_name(vmm_port_name(pid, nic).as_bytes()).map_err(|e| {
                ClusterError::Switch {
                    network: network.clone(),
                    source: crate::switch::SwitchError::Setup(e),
                }
            })?;
        switch
            .attach(node, &addr)
            .map_err(|source| ClusterError::Switch {
                network: network.clone(),
                source,
            })?;
    }
    Ok(())
}

/// Forgets `node`'s ports (and their learned MACs) after its `vmm` ended.
pub fn detach(node: &str, switches: &[(String, Arc<SwitchHandle>)]) {
    for (_, switch) in switches {
        switch.detach(node);
    }
}

/// Checks that the `vmm` with `pid` has bound the `count` port addresses [`attach`] used.
pub fn check_bound(node: &str, pid: u32, count: usize) -> Result<()> {
    if count == 0 {
        return Ok(());
    }
    let table = std::fs::read_to_string("/proc/net/unix")
        .map_err(ClusterError::io("reading", "/proc/net/unix"))?;
    for nic in 0..count {
        let name = vmm_port_name(pid, nic);
        if !abstract_bound(&table, &name) {
            return Err(ClusterError::BadNode {
                node: node.to_string(),
                reason: format!(
                    "its vmm (pid {pid}) did not bind @{name} for interface {nic}; the switch \
                     port naming of vmm changed: update orchestrator/src/cluster/wiring.rs"
                ),
            });
        }
    }
    Ok(())
}

/// Whether `/proc/net/unix` text lists a socket bound to the abstract `name`.
pub fn abstract_bound(proc_net_unix: &str, name: &str) -> bool {
    proc_net_unix
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(7))
        .any(|path| path.strip_prefix('@') == Some(name))
}
