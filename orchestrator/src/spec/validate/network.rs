//! Networks and node interfaces: subnets, addresses, references.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::{names, Checker};
use crate::spec::error::ProblemKind;
use crate::spec::locate::FieldPath;
use crate::spec::ClusterSpec;

/// Checks every network's subnet.
pub(super) fn check_networks(c: &mut Checker<'_>, spec: &ClusterSpec) {
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

/// Checks every node's interfaces: known network, one per network, address inside the
/// subnet, no address used twice on a network.
pub(super) fn check_interfaces(c: &mut Checker<'_>, spec: &ClusterSpec) {
    // (network name, address) -> first node using it.
    let mut used: HashMap<(&str, Ipv4Addr), &str> = HashMap::new();
    for (i, node) in spec.nodes.iter().enumerate() {
        let mut attached = HashSet::new();
        for (n, nic) in node.networks.iter().enumerate() {
            let at = FieldPath::default()
                .key("node")
                .index(i)
                .key("networks")
                .index(n);
            let Some(net) = spec.network(&nic.network) else {
                let known = names(spec.networks.iter().map(|n| n.name.as_str()));
                let msg = format!(
                    "network {:?} is not defined; add a [[network]] with that name \
                     or use one of: {known}",
                    nic.network
                );
                c.report(at.key("network"), ProblemKind::UnknownNetwork, msg);
                continue;
            };
            if !attached.insert(nic.network.as_str()) {
                let msg = format!(
                    "node {} is attached to network {} twice; keep one entry",
                    node.name, nic.network
                );
                c.report(at.key("network"), ProblemKind::DuplicateName, msg);
            }
            let Ok(addr) = nic.address() else {
                let msg = format!(
                    "address {:?} is not an IPv4 address with prefix; \
                     write it like \"10.0.0.11/24\"",
                    nic.address
                );
                c.report(at.key("address"), ProblemKind::BadAddress, msg);
                continue;
            };
            let Ok(subnet) = net.subnet() else { continue };
            let host = addr.addr();
            if !is_host_of(addr, subnet) {
                let msg = format!(
                    "address {} is not a host address of network {} ({}); \
                     pick one between {} and {} with prefix /{}",
                    nic.address,
                    net.name,
                    net.subnet,
                    first_host(subnet),
                    last_host(subnet),
                    subnet.prefix_len()
                );
                c.report(at.key("address"), ProblemKind::AddressOutsideSubnet, msg);
            }
            if let Some(other) = used.insert((nic.network.as_str(), host), node.name.as_str()) {
                let msg = format!(
                    "address {host} on network {} is already used by node {other}; \
                     give each node its own address",
                    net.name
                );
                c.report(at.key("address"), ProblemKind::DuplicateAddress, msg);
            }
        }
    }
}

/// An interface address must be a host of the subnet, with the subnet's prefix.
fn is_host_of(addr: Ipv4Net, subnet: Ipv4Net) -> bool {
    let host = addr.addr();
    subnet.contains(&host)
        && addr.prefix_len() == subnet.prefix_len()
        && host != subnet.network()
        && host != subnet.broadcast()
}

fn first_host(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).saturating_add(1))
}

fn last_host(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.broadcast()).saturating_sub(1))
}
