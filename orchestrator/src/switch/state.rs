//! The switch's shared state: ports, MAC table, link rules, counters, and the forwarding
//! decision. The worker thread and the handle both lock it; every operation is short.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;

use super::frame::{self, Mac};
use super::link::{self, LinkRule};
use super::peer::PeerAddr;
use super::stats::{PortInfo, PortStats};
use super::SwitchError;

/// Most ports one switch learns; frames from further unknown peers are dropped.
const MAX_PORTS: usize = 1024;
/// Most MAC addresses remembered; a guest inventing addresses cannot grow the table further.
const MAX_MACS: usize = 8192;

/// Identifies a port for as long as it exists.
pub type PortId = u64;

struct Port {
    name: String,
    peer: PeerAddr,
    addr: SocketAddr,
    stats: PortStats,
}

/// Where one copy of a frame goes, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Destination port.
    pub port: PortId,
    /// `None`: now; otherwise the time the frame is due.
    pub due: Option<Instant>,
}

/// Everything the switch knows; see the module docs.
pub struct State {
    seed: u64,
    mac_ageing: Duration,
    next_id: PortId,
    ports: BTreeMap<PortId, Port>,
    by_peer: HashMap<PeerAddr, PortId>,
    macs: HashMap<Mac, (PortId, Instant)>,
    rules: HashMap<(String, String), LinkRule>,
    rngs: HashMap<(String, String), StdRng>,
    /// Latest due time per (from, to) port pair, so delayed frames on a link stay in order.
    last_due: HashMap<(PortId, PortId), Instant>,
    /// Frames from unnamed sockets or beyond the port limit.
    unaddressed: u64,
}

impl State {
    /// Empty state; `seed` drives loss, `mac_ageing` forgets idle MAC entries.
    pub fn new(seed: u64, mac_ageing: Duration) -> Self {
        State {
            seed,
            mac_ageing,
            next_id: 0,
            ports: BTreeMap::new(),
            by_peer: HashMap::new(),
            macs: HashMap::new(),
            rules: HashMap::new(),
            rngs: HashMap::new(),
            last_due: HashMap::new(),
            unaddressed: 0,
        }
    }

    fn add_port(&mut self, name: String, peer: PeerAddr) -> io::Result<PortId> {
        let addr = peer.to_std()?;
        let id = self.next_id;
        self.next_id += 1;
        self.by_peer.insert(peer.clone(), id);
        self.ports.insert(
            id,
            Port {
                name,
                peer,
                addr,
                stats: PortStats::default(),
            },
        );
        Ok(id)
    }

    /// Names the port of `peer` as `node` (creating the port if it was not learned yet).
    pub fn attach(&mut self, node: &str, peer: PeerAddr) -> Result<(), SwitchError> {
        if let Some(existing) = self.ports.values().find(|p| p.name == node) {
            if existing.peer == peer {
                return Ok(());
            }
            return Err(SwitchError::NodeAttached {
                node: node.to_string(),
                existing: existing.peer.to_string(),
            });
        }
        match self
            .by_peer
            .get(&peer)
            .and_then(|id| self.ports.get_mut(id))
        {
            Some(port) => port.name = node.to_string(),
            None => {
                self.add_port(node.to_string(), peer)
                    .map_err(SwitchError::Setup)?;
            }
        }
        Ok(())
    }

    /// Removes the port named `node`; returns whether it existed.
    pub fn detach(&mut self, node: &str) -> bool {
        let Some((&id, _)) = self.ports.iter().find(|(_, p)| p.name == node) else {
            return false;
        };
        if let Some(port) = self.ports.remove(&id) {
            self.by_peer.remove(&port.peer);
        }
        self.macs.retain(|_, (port, _)| *port != id);
        self.last_due.retain(|(a, b), _| *a != id && *b != id);
        true
    }

    /// Changes the rule for frames from `from` to `to` with `change`.
    pub fn update_rule(&mut self, from: &str, to: &str, change: impl FnOnce(&mut LinkRule)) {
        let key = (from.to_string(), to.to_string());
        let mut rule = self.rules.get(&key).copied().unwrap_or_default();
        change(&mut rule);
        if rule.is_clear() {
            self.rules.remove(&key);
        } else {
            self.rules.insert(key, rule);
        }
    }

    /// Removes the block flag from every link (loss and delay stay).
    pub fn heal_all(&mut self) {
        for rule in self.rules.values_mut() {
            rule.blocked = false;
        }
        self.rules.retain(|_, r| !r.is_clear());
    }

    /// The rule for frames from `from` to `to`.
    pub fn rule(&self, from: &str, to: &str) -> LinkRule {
        self.rules
            .get(&(from.to_string(), to.to_string()))
            .copied()
            .unwrap_or_default()
    }

    /// All ports with their counters, in the order they were created.
    pub fn ports(&self) -> Vec<PortInfo> {
        self.ports
            .values()
            .map(|p| PortInfo {
                name: p.name.clone(),
                peer: p.peer.to_string(),
                stats: p.stats,
            })
            .collect()
    }

    /// Counters of the port named `node`.
    pub fn stats(&self, node: &str) -> Option<PortStats> {
        self.ports
            .values()
            .find(|p| p.name == node)
            .map(|p| p.stats)
    }

    /// Frames dropped because their sender had no address (or too many ports exist).
    pub fn unaddressed(&self) -> u64 {
        self.unaddressed
    }

    /// Decides where a frame received from `from` goes; learns the port and source MAC.
    pub fn forward(&mut self, from: &SocketAddr, frame: &[u8], now: Instant) -> Vec<Delivery> {
        let Some(peer) = PeerAddr::from_std(from) else {
            self.unaddressed += 1;
            return Vec::new();
        };
        let src_port = match self.by_peer.get(&peer) {
            Some(&id) => id,
            None if self.ports.len() >= MAX_PORTS => {
                self.unaddressed += 1;
                return Vec::new();
            }
            None => match self.add_port(peer.to_string(), peer) {
                Ok(id) => id,
                Err(e) => {
                    tracing::debug!(error = %e, "switch: unusable peer address");
                    self.unaddressed += 1;
                    return Vec::new();
                }
            },
        };
        let Some((dst, src)) = frame::addresses(frame) else {
            if let Some(p) = self.ports.get_mut(&src_port) {
                p.stats.malformed += 1;
            }
            return Vec::new();
        };
        if let Some(p) = self.ports.get_mut(&src_port) {
            p.stats.frames_in += 1;
            p.stats.bytes_in += frame.len() as u64;
        }
        if !frame::is_group(&src) {
            self.learn(src, src_port, now);
        }
        let targets: Vec<PortId> = match self.lookup(&dst, now) {
            Some(port) if port == src_port => Vec::new(),
            Some(port) if !frame::is_group(&dst) => vec![port],
            _ => self
                .ports
                .keys()
                .copied()
                .filter(|&p| p != src_port)
                .collect(),
        };
        targets
            .into_iter()
            .filter_map(|to| self.apply_rule(src_port, to, now))
            .collect()
    }

    fn learn(&mut self, mac: Mac, port: PortId, now: Instant) {
        if self.macs.len() >= MAX_MACS && !self.macs.contains_key(&mac) {
            let ageing = self.mac_ageing;
            self.macs
                .retain(|_, (_, seen)| now.saturating_duration_since(*seen) < ageing);
            if self.macs.len() >= MAX_MACS {
                return;
            }
        }
        self.macs.insert(mac, (port, now));
    }

    fn lookup(&self, mac: &Mac, now: Instant) -> Option<PortId> {
        let &(port, seen) = self.macs.get(mac)?;
        (now.saturating_duration_since(seen) < self.mac_ageing && self.ports.contains_key(&port))
            .then_some(port)
    }

    /// Applies the link rule from `from` to `to`: `None` if the copy is dropped.
    fn apply_rule(&mut self, from: PortId, to: PortId, now: Instant) -> Option<Delivery> {
        if self.rules.is_empty() {
            // No faults anywhere: skip the per-link lookups.
            return Some(Delivery {
                port: to,
                due: None,
            });
        }
        let (from_name, to_name) = (
            self.ports.get(&from)?.name.clone(),
            self.ports.get(&to)?.name.clone(),
        );
        let rule = self.rule(&from_name, &to_name);
        let dropped = rule.blocked || {
            let seed = self.seed;
            let rng = self
                .rngs
                .entry((from_name.clone(), to_name.clone()))
                .or_insert_with(|| link::link_rng(seed, &from_name, &to_name));
            link::lose(rng, rule.loss)
        };
        if dropped {
            if let Some(p) = self.ports.get_mut(&to) {
                p.stats.dropped += 1;
            }
            return None;
        }
        if rule.delay.is_zero() {
            return Some(Delivery {
                port: to,
                due: None,
            });
        }
        let last = self.last_due.entry((from, to)).or_insert(now);
        let due = (now + rule.delay).max(*last);
        *last = due;
        Some(Delivery {
            port: to,
            due: Some(due),
        })
    }

    /// Sends `frame` to `port` without blocking; a refusal counts as a drop.
    pub fn send(&mut self, socket: &UnixDatagram, port: PortId, frame: &[u8]) {
        let Some(p) = self.ports.get_mut(&port) else {
            return;
        };
        match socket.send_to_addr(frame, &p.addr) {
            Ok(_) => {
                p.stats.frames_out += 1;
                p.stats.bytes_out += frame.len() as u64;
            }
            Err(e) => {
                tracing::trace!(port = %p.name, error = %e, "switch: peer refused frame");
                p.stats.dropped += 1;
            }
        }
    }
}
