//! Net faults: the actions a net rule can take on a frame, frame matching (EtherType, IP
//! protocol, TCP/UDP port) and the per-NIC hook the net device asks about every frame.

use std::sync::Arc;
use std::time::Duration;

use super::action::{action_name, delay};
use super::engine::{fire, FaultEngine, ARMED_NET};
use super::log::FaultRecord;
use super::rules::{NetActionKind, NetDirKind, NetRule};
use super::Stream;

/// Direction of a frame relative to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetDirection {
    /// The guest transmitted this frame.
    FromGuest,
    /// This frame is about to be delivered to the guest.
    ToGuest,
}

impl NetDirection {
    fn name(self) -> &'static str {
        match self {
            NetDirection::FromGuest => "tx",
            NetDirection::ToGuest => "rx",
        }
    }
}

/// What the net device must do with one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetFault {
    /// Drop it.
    Drop,
    /// Deliver it this much later.
    Delay(Duration),
    /// Deliver it twice.
    Duplicate,
    /// XOR `mask` into byte `at`, then deliver it.
    Corrupt { at: usize, mask: u8 },
    /// Hold it and deliver it right after the next frame in the same direction.
    Reorder,
}

/// The fault hook of one NIC.
#[derive(Clone, Debug)]
pub struct NetFaults {
    engine: Arc<FaultEngine>,
    nic: usize,
}

impl NetFaults {
    /// The hook of NIC `nic` (index in `--net` order).
    pub fn new(engine: Arc<FaultEngine>, nic: usize) -> Self {
        NetFaults { engine, nic }
    }

    /// A hook on an engine of its own without rules.
    pub fn none() -> Self {
        NetFaults::new(FaultEngine::new(), 0)
    }

    /// True if any net rule exists (one atomic load).
    #[inline]
    pub fn armed(&self) -> bool {
        self.engine.armed(ARMED_NET)
    }

    /// Decides the fate of frame number `frame_no` (counted per direction) of this NIC. The
    /// first rule that fires decides; the fault is logged.
    pub fn decide(&self, dir: NetDirection, frame_no: u64, frame: &[u8]) -> Option<NetFault> {
        if !self.armed() {
            return None;
        }
        let headers = Headers::parse(frame);
        let mut st = self.engine.lock();
        let st = &mut *st;
        let seed = st.rules.seed;
        for (i, rule) in st.rules.net.iter().enumerate() {
            if !matches(rule, self.nic, dir, &headers) {
                continue;
            }
            let Some(mut draw) = fire(
                seed,
                Stream::Net(i),
                &mut st.net[i],
                rule.after,
                rule.count,
                rule.probability,
            ) else {
                continue;
            };
            let (fault, detail) = match rule.action {
                NetActionKind::Drop => (NetFault::Drop, None),
                NetActionKind::Duplicate => (NetFault::Duplicate, None),
                NetActionKind::Reorder => (NetFault::Reorder, None),
                NetActionKind::Delay => {
                    let (held, detail) = delay(rule.delay_ms);
                    (NetFault::Delay(held), Some(detail))
                }
                NetActionKind::Corrupt => {
                    if frame.is_empty() {
                        continue;
                    }
                    let bit = draw.below(frame.len() as u64 * 8);
                    let at = (bit / 8) as usize;
                    (
                        NetFault::Corrupt {
                            at,
                            mask: 1 << (bit % 8),
                        },
                        Some(format!("flipped bit {} of byte {at}", bit % 8)),
                    )
                }
            };
            st.record(FaultRecord {
                time: FaultRecord::now(),
                device: format!("nic{}", self.nic),
                op: dir.name().into(),
                request: frame_no,
                offset: None,
                len: Some(frame.len() as u64),
                rule: format!("net[{i}]"),
                action: action_name(rule.action),
                detail,
            });
            return Some(fault);
        }
        None
    }
}

fn matches(rule: &NetRule, nic: usize, dir: NetDirection, h: &Headers) -> bool {
    if rule.nic.is_some_and(|n| n != nic) {
        return false;
    }
    let dir_ok = matches!(
        (rule.dir, dir),
        (NetDirKind::Both, _)
            | (NetDirKind::Tx, NetDirection::FromGuest)
            | (NetDirKind::Rx, NetDirection::ToGuest)
    );
    dir_ok
        && rule.ethertype.is_none_or(|t| h.ethertype == Some(t))
        && rule.ip_proto.is_none_or(|p| h.ip_proto == Some(p))
        && rule
            .port
            .is_none_or(|p| h.ports.is_some_and(|(s, d)| s == p || d == p))
}

/// The header fields rules match on; `None` where the frame has no such header.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Headers {
    pub(crate) ethertype: Option<u16>,
    pub(crate) ip_proto: Option<u8>,
    /// (source, destination) of a TCP or UDP segment.
    pub(crate) ports: Option<(u16, u16)>,
}

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_VLAN: u16 = 0x8100;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

impl Headers {
    /// Reads Ethernet (one VLAN tag skipped), IPv4/IPv6 (no IPv6 extension headers) and the
    /// TCP/UDP ports. Frames are guest- or network-controlled: every index is checked.
    pub(crate) fn parse(frame: &[u8]) -> Headers {
        let u16_at = |i: usize| {
            frame
                .get(i..i + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
        };
        let mut h = Headers::default();
        let mut l3 = 14;
        let mut ethertype = u16_at(12);
        if ethertype == Some(ETH_VLAN) {
            ethertype = u16_at(16);
            l3 = 18;
        }
        h.ethertype = ethertype;
        let (proto, l4) = match ethertype {
            Some(ETH_IPV4) => {
                let Some(&vihl) = frame.get(l3) else {
                    return h;
                };
                let ihl = usize::from(vihl & 0xf) * 4;
                let frag = u16_at(l3 + 6).unwrap_or(0) & 0x1fff;
                let proto = frame.get(l3 + 9).copied();
                // Later fragments carry no transport header.
                (proto, (frag == 0 && ihl >= 20).then_some(l3 + ihl))
            }
            Some(ETH_IPV6) => (frame.get(l3 + 6).copied(), Some(l3 + 40)),
            _ => return h,
        };
        h.ip_proto = proto;
        if let (Some(PROTO_TCP | PROTO_UDP), Some(l4)) = (proto, l4) {
            if let (Some(s), Some(d)) = (u16_at(l4), u16_at(l4 + 2)) {
                h.ports = Some((s, d));
            }
        }
        h
    }
}
