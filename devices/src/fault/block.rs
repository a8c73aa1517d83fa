//! Block faults: what a disk's requests look like to the rules, the actions a block rule can
//! take, and the per-disk hook that the fault layer of a disk's backend asks.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::action::{action_name, delay};
use super::engine::{fire, FaultEngine, ARMED_BLOCK};
use super::log::FaultRecord;
use super::rules::{BlockActionKind, BlockOpKind, BlockRule};
use super::Stream;

/// Sector size the corrupt action works in (one flipped bit per sector).
const SECTOR: u64 = 512;

/// A block request as the fault rules see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockOp {
    /// Read `len` bytes at byte offset `offset`.
    Read { offset: u64, len: u64 },
    /// Write `len` bytes at byte offset `offset`.
    Write { offset: u64, len: u64 },
    /// Flush to stable storage (no range: rules with a range never match it).
    Flush,
}

impl BlockOp {
    fn name(&self) -> &'static str {
        match self {
            BlockOp::Read { .. } => "read",
            BlockOp::Write { .. } => "write",
            BlockOp::Flush => "flush",
        }
    }

    fn range(&self) -> Option<(u64, u64)> {
        match *self {
            BlockOp::Read { offset, len } | BlockOp::Write { offset, len } => Some((offset, len)),
            BlockOp::Flush => None,
        }
    }
}

/// One bit to flip in the data a read returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitFlip {
    /// Byte offset within the request's data.
    pub at: u64,
    /// Bit mask to XOR into that byte.
    pub mask: u8,
}

/// What the fault layer must do to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockFault {
    /// Fail it without touching the disk.
    Eio,
    /// Carry it out; complete it this much later.
    Delay(Duration),
    /// Write only the first `keep_bytes` bytes, then fail it.
    Torn { keep_bytes: u64 },
    /// Carry out the read, then flip these bits in the returned data.
    Corrupt(Vec<BitFlip>),
    /// Complete the write successfully without storing it.
    Lose,
}

/// The fault hook of one disk: asks the shared engine about each request.
#[derive(Clone, Debug)]
pub struct BlockFaults {
    engine: Arc<FaultEngine>,
    disk: usize,
}

impl BlockFaults {
    /// The hook of disk `disk` (index in `--disk` order).
    pub fn new(engine: Arc<FaultEngine>, disk: usize) -> Self {
        BlockFaults { engine, disk }
    }

    /// A hook on an engine of its own without rules (tests, embedding without faults).
    pub fn none() -> Self {
        BlockFaults::new(FaultEngine::new(), 0)
    }

    /// The engine behind the hook.
    pub fn engine(&self) -> &Arc<FaultEngine> {
        &self.engine
    }

    /// The disk index.
    pub fn disk(&self) -> usize {
        self.disk
    }

    /// True if any block rule exists (one atomic load; the no-rules fast path).
    #[inline]
    pub fn armed(&self) -> bool {
        self.engine.armed(ARMED_BLOCK)
    }

    /// Decides the fate of request number `request` of this disk. Rules are tried in order;
    /// the first that fires decides, and the fault is logged.
    pub fn decide(&self, request: u64, op: &BlockOp) -> Option<BlockFault> {
        if !self.armed() {
            return None;
        }
        let mut st = self.engine.lock();
        let st = &mut *st;
        let seed = st.rules.seed;
        for (i, rule) in st.rules.block.iter().enumerate() {
            if !matches(rule, self.disk, op) {
                continue;
            }
            let Some(mut draw) = fire(
                seed,
                Stream::Block(i),
                &mut st.block[i],
                rule.after,
                rule.count,
                rule.probability,
            ) else {
                continue;
            };
            let (fault, detail) = match rule.action {
                BlockActionKind::Eio => (BlockFault::Eio, None),
                BlockActionKind::Lose => (BlockFault::Lose, None),
                BlockActionKind::Delay => {
                    let (held, detail) = delay(rule.delay_ms);
                    (BlockFault::Delay(held), Some(detail))
                }
                BlockActionKind::Torn => {
                    let keep = rule.keep_bytes.unwrap_or(0);
                    (
                        BlockFault::Torn { keep_bytes: keep },
                        Some(format!("keep_bytes={keep}")),
                    )
                }
                BlockActionKind::Corrupt => {
                    let flips = corrupt_bits(rule, op, &mut |n| draw.below(n));
                    let detail = format!(
                        "flipped {} bit(s), first at request byte {}",
                        flips.len(),
                        flips.first().map_or(0, |f| f.at)
                    );
                    (BlockFault::Corrupt(flips), Some(detail))
                }
            };
            let (offset, len) = op.range().unzip();
            st.record(FaultRecord {
                time: FaultRecord::now(),
                device: format!("disk{}", self.disk),
                op: op.name().into(),
                request,
                offset,
                len,
                rule: format!("block[{i}]"),
                action: action_name(rule.action),
                detail,
            });
            return Some(fault);
        }
        None
    }
}

fn matches(rule: &BlockRule, disk: usize, op: &BlockOp) -> bool {
    if rule.disk.is_some_and(|d| d != disk) {
        return false;
    }
    let kind_ok = matches!(
        (rule.effective_op(), op),
        (BlockOpKind::Any, _)
            | (BlockOpKind::Read, BlockOp::Read { .. })
            | (BlockOpKind::Write, BlockOp::Write { .. })
            | (BlockOpKind::Flush, BlockOp::Flush)
    );
    if !kind_ok {
        return false;
    }
    if rule.from.is_none() && rule.to.is_none() {
        return true;
    }
    let Some((offset, len)) = op.range() else {
        return false;
    };
    let (from, to) = (rule.from.unwrap_or(0), rule.to.unwrap_or(u64::MAX));
    offset < to && offset.saturating_add(len) > from
}

/// One seeded bit per sector of the request that lies inside the rule's range.
fn corrupt_bits(rule: &BlockRule, op: &BlockOp, below: &mut dyn FnMut(u64) -> u64) -> Vec<BitFlip> {
    let Some((offset, len)) = op.range() else {
        return Vec::new();
    };
    let (from, to) = (rule.from.unwrap_or(0), rule.to.unwrap_or(u64::MAX));
    let mut flips = Vec::new();
    let mut at = 0;
    while at < len {
        let sector_start = offset + at;
        let sector_len = SECTOR.min(len - at);
        if sector_start < to && sector_start + sector_len > from {
            let bit = below(sector_len * 8);
            flips.push(BitFlip {
                at: at + bit / 8,
                mask: 1 << (bit % 8),
            });
        }
        at += SECTOR;
    }
    flips
}
