//! Where a virtio-blk device's bytes live: a [`BlockBackend`] trait and layers stacked on
//! it. The request code talks to the top of the stack and never to a file.
//!
//! The stack [`open_stack`] builds for a disk, top to bottom:
//! - [`FaultLayer`]: applies the disk's fault rules (errors, delays, torn, corrupt and lost
//!   writes); with no rules it costs one atomic load per request;
//! - [`WriteCache`] (only with `cache=writeback`): a volatile write cache; writes reach the
//!   layer below only on flush, a power cut drops them;
//! - [`RawFile`]: the image file, with vectored positional I/O straight into guest memory.
//!
//! Layers only see byte offsets and guest buffers, so more (a copy-on-write overlay, a
//! throttle) stack the same way.

mod buffers;
mod fault_layer;
mod raw;
mod stack;
mod write_cache;
#[cfg(test)]
mod write_cache_tests;

use std::io;
use std::time::Duration;

pub use buffers::{total_len, GuestSlice};
pub use fault_layer::{is_injected, FaultLayer};
pub use raw::RawFile;
pub use stack::{open_stack, CacheMode, DiskStack};
pub use write_cache::{CacheHandle, PowerCutReport, WriteCache, DEFAULT_CACHE_MEMORY};

/// When the guest may learn that a request finished.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Completion {
    /// How long the completion is held back (zero: at once).
    pub delay: Duration,
}

impl Completion {
    /// Complete at once.
    pub const NOW: Completion = Completion {
        delay: Duration::ZERO,
    };

    /// Complete after `delay`.
    pub fn after(delay: Duration) -> Self {
        Completion { delay }
    }
}

/// A disk as a stack of layers sees it. Offsets and lengths are in bytes; the request code
/// only sends sector-aligned requests inside [`BlockBackend::capacity`], but every layer
/// must fail cleanly (an error, never a panic) on anything else.
///
/// Buffers are guest memory: the guest may change them at any time, so layers copy them
/// with volatile accesses and never assume they stay the same.
pub trait BlockBackend: Send {
    /// Disk size in bytes.
    fn capacity(&self) -> u64;
    /// Fills `bufs`, in order, with the bytes starting at `offset`.
    fn read(&mut self, offset: u64, bufs: &[GuestSlice<'_>]) -> io::Result<Completion>;
    /// Stores the bytes of `bufs`, in order, starting at `offset`.
    fn write(&mut self, offset: u64, bufs: &[GuestSlice<'_>]) -> io::Result<Completion>;
    /// Makes every completed write durable.
    fn flush(&mut self) -> io::Result<Completion>;
}

impl<B: BlockBackend + ?Sized> BlockBackend for Box<B> {
    fn capacity(&self) -> u64 {
        (**self).capacity()
    }
    fn read(&mut self, offset: u64, bufs: &[GuestSlice<'_>]) -> io::Result<Completion> {
        (**self).read(offset, bufs)
    }
    fn write(&mut self, offset: u64, bufs: &[GuestSlice<'_>]) -> io::Result<Completion> {
        (**self).write(offset, bufs)
    }
    fn flush(&mut self) -> io::Result<Completion> {
        (**self).flush()
    }
}
