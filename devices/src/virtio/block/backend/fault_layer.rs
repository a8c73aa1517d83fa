//! The layer that applies a disk's fault rules. It numbers the disk's requests (reads,
//! writes and flushes, in arrival order), asks the disk's [`BlockFaults`] hook about each,
//! and carries out what the rule says on the layer below.

use std::io;

use super::buffers::{copy_into, copy_out, sub_range};
use super::{total_len, BlockBackend, Completion, GuestSlice};
use crate::fault::{BlockFault, BlockFaults, BlockOp};

/// The error of a request failed on purpose; the request code logs it quietly.
#[derive(Debug, thiserror::Error)]
#[error("injected fault: {0}")]
pub struct InjectedFault(&'static str);

/// True if `e` was injected by a fault rule (not a real I/O error).
pub fn is_injected(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<InjectedFault>())
}

fn injected(what: &'static str) -> io::Error {
    io::Error::other(InjectedFault(what))
}

/// Applies fault rules on top of `inner`.
pub struct FaultLayer<B> {
    inner: B,
    faults: BlockFaults,
    requests: u64,
}

impl<B: BlockBackend> FaultLayer<B> {
    /// Puts `faults` (the disk's hook) on top of `inner`.
    pub fn new(inner: B, faults: BlockFaults) -> Self {
        FaultLayer {
            inner,
            faults,
            requests: 0,
        }
    }

    /// Requests seen so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    fn decide(&mut self, op: BlockOp) -> Option<BlockFault> {
        let n = self.requests;
        self.requests += 1;
        if !self.faults.armed() {
            return None;
        }
        self.faults.decide(n, &op)
    }
}

impl<B: BlockBackend> BlockBackend for FaultLayer<B> {
    fn capacity(&self) -> u64 {
        self.inner.capacity()
    }

    fn read(&mut self, offset: u64, bufs: &[GuestSlice<'_>]) -> io::Result<Completion> {
        let len = total_len(bufs);
        match self.decide(BlockOp::Read { offset, len }) {
            None | Some(BlockFault::Torn { .. } | BlockFault::Lose) => {
                self.inner.read(offset, bufs)
            }
            Some(BlockFault::Eio) => Err(injected("eio")),
            Some(BlockFault::Delay(d)) => {
                self.inner.read(offset, bufs).map(|_| Completion::after(d))
            }
            Some(BlockFault::Corrupt(flips)) => {
                let done = self.inner.read(offset, bufs)?;
                for f in flips {
                    let mut byte = [0u8];
                    copy_out(bufs, f.at, &mut byte)?;
                    copy_into(bufs, f.at, &[byte[0] ^ f.mask])?;
                }
                Ok(done)
            }
        }
    }

    fn write(&mut self, offset: u64, bufs: &[GuestSlice<'_>]) -> io::Result<Completion> {
        let len = total_len(bufs);
        match self.decide(BlockOp::Write { offset, len }) {
            None | Some(BlockFault::Corrupt(_)) => self.inner.write(offset, bufs),
            Some(BlockFault::Eio) => Err(injected("eio")),
            Some(BlockFault::Delay(d)) => {
                self.inner.write(offset, bufs).map(|_| Completion::after(d))
            }
            Some(BlockFault::Lose) => Ok(Completion::NOW),
            Some(BlockFault::Torn { keep_bytes }) => {
                let kept = sub_range(bufs, 0, keep_bytes.min(len));
                if !kept.is_empty() {
                    self.inner.write(offset, &kept)?;
                }
                Err(injected("torn write"))
            }
        }
    }

    fn flush(&mut self) -> io::Result<Completion> {
        match self.decide(BlockOp::Flush) {
            Some(BlockFault::Eio) => Err(injected("eio")),
            Some(BlockFault::Delay(d)) => self.inner.flush().map(|_| Completion::after(d)),
            _ => self.inner.flush(),
        }
    }
}
