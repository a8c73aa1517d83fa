//! A volatile write cache, like a disk's own DRAM cache with `VIRTIO_BLK_F_FLUSH`: writes
//! land here and reach the layer below only when the guest flushes. A power cut drops what
//! was not flushed (optionally a seeded subset of it persists, as a disk writing back its
//! cache in its own order would leave). Memory is bounded: past the limit, cached blocks go
//! to a spill file beside the disk.
//!
//! The cache works in 4 KiB blocks, each with a mask of which of its 512-byte sectors it
//! holds; a block persists or vanishes as a whole at a power cut (4 KiB atomic writes).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::buffers::{copy_into, copy_out};
use super::{total_len, BlockBackend, Completion, GuestSlice};
use crate::fault::{Draw, Stream};

/// Default bound on the cache's memory (the rest spills to the file).
pub const DEFAULT_CACHE_MEMORY: u64 = 64 << 20;

const BLOCK: u64 = 4096;
const SECTOR: u64 = 512;
const SECTORS_PER_BLOCK: u64 = BLOCK / SECTOR;
/// Largest single write to the layer below while writing the cache back.
const MAX_WRITEBACK_RUN: usize = 1 << 20;

enum Place {
    Memory(Box<[u8]>),
    /// Slot number in the spill file.
    Spill(u64),
}

/// The cached sectors of one 4 KiB block.
struct Entry {
    /// Bit `i`: sector `i` of the block is cached.
    mask: u8,
    place: Place,
}

/// What a power cut did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerCutReport {
    /// Unflushed 4 KiB blocks that were dropped.
    pub lost_blocks: u64,
    /// Unflushed blocks that reached the disk anyway (the seeded subset).
    pub kept_blocks: u64,
}

struct Inner {
    lower: Box<dyn BlockBackend>,
    capacity: u64,
    entries: BTreeMap<u64, Entry>,
    memory_blocks: u64,
    max_memory_blocks: u64,
    spill: File,
    spill_slots: u64,
    powered: bool,
}

/// The write-back cache layer.
pub struct WriteCache {
    inner: Arc<Mutex<Inner>>,
}

/// Lets the VMM reach a disk's cache from outside the device thread: power cut, flush,
/// how much is unflushed.
#[derive(Clone)]
pub struct CacheHandle {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for CacheHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheHandle")
            .field("dirty_bytes", &self.dirty_bytes())
            .finish()
    }
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

fn power_lost() -> io::Error {
    io::Error::other("the disk has lost power")
}

impl WriteCache {
    /// A cache over `lower` holding at most `memory_limit` bytes in memory; the rest goes to
    /// `spill` (an empty file the cache owns, e.g. created beside the disk and unlinked).
    pub fn new(lower: Box<dyn BlockBackend>, spill: File, memory_limit: u64) -> Self {
        let capacity = lower.capacity();
        WriteCache {
            inner: Arc::new(Mutex::new(Inner {
                lower,
                capacity,
                entries: BTreeMap::new(),
                memory_blocks: 0,
                max_memory_blocks: memory_limit / BLOCK,
                spill,
                spill_slots: 0,
                powered: true,
            })),
        }
    }

    /// A handle for power cuts and inspection.
    pub fn handle(&self) -> CacheHandle {
        CacheHandle {
            inner: self.inner.clone(),
        }
    }
}

impl CacheHandle {
    /// Pulls the plug: every unflushed block is dropped, except that each persists with
    /// probability `keep` (a pure function of `seed`, `disk` and the block number). The
    /// cache then fails every request and writes nothing back when dropped.
    pub fn power_cut(&self, seed: u64, disk: usize, keep: f64) -> io::Result<PowerCutReport> {
        let mut inner = lock(&self.inner);
        if !inner.powered {
            return Ok(PowerCutReport::default());
        }
        inner.powered = false;
        let entries = std::mem::take(&mut inner.entries);
        let mut report = PowerCutReport::default();
        let mut kept = BTreeMap::new();
        for (block, entry) in entries {
            if keep > 0.0 && Draw::new(seed, Stream::PowerCut(disk), block).chance(keep) {
                kept.insert(block, entry);
                report.kept_blocks += 1;
            } else {
                report.lost_blocks += 1;
            }
        }
        if !kept.is_empty() {
            inner.write_back(&kept)?;
            inner.lower.flush()?;
        }
        Ok(report)
    }

    /// Writes everything back and flushes the layer below (what a guest flush does).
    pub fn flush(&self) -> io::Result<()> {
        lock(&self.inner).flush().map(drop)
    }

    /// Bytes written but not yet flushed.
    pub fn dirty_bytes(&self) -> u64 {
        let inner = lock(&self.inner);
        inner
            .entries
            .values()
            .map(|e| u64::from(e.mask.count_ones()) * SECTOR)
            .sum()
    }

    /// Bytes of the cache held in memory (the rest is in the spill file).
    pub fn memory_bytes(&self) -> u64 {
        lock(&self.inner).memory_blocks * BLOCK
    }

    /// False after a power cut.
    pub fn is_powered(&self) -> bool {
        lock(&self.inner).powered
    }
}

impl Inner {
    fn check(&self, offset: u64, len: u64) -> io::Result<()> {
        if !self.powered {
            return Err(power_lost());
        }
        let in_range = offset
            .checked_add(len)
            .is_some_and(|end| end <= self.capacity);
        if !offset.is_multiple_of(SECTOR) || !len.is_multiple_of(SECTOR) || !in_range {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unaligned or out-of-range request: {len} bytes at {offset}"),
            ));
        }
        Ok(())
    }

    /// Reads cached sector `s` of `entry` into `out` (512 bytes).
    fn sector(&self, entry: &Entry, s: u64, out: &mut [u8]) -> io::Result<()> {
        let at = (s * SECTOR) as usize;
        match &entry.place {
            Place::Memory(data) => {
                out.copy_from_slice(&data[at..at + SECTOR as usize]);
                Ok(())
            }
            Place::Spill(slot) => self.spill.read_exact_at(out, slot * BLOCK + at as u64),
        }
    }

    fn read(&mut self, offset: u64, bufs: &[GuestSlice<'_>]) -> io::Result<Completion> {
        let len = total_len(bufs);
        self.check(offset, len)?;
        if len == 0 {
            return Ok(Completion::NOW);
        }
        let (first, last) = (offset / BLOCK, (offset + len - 1) / BLOCK);
        if self.entries.range(first..=last).next().is_none() {
            return self.lower.read(offset, bufs);
        }
        // Read the disk, then lay the cached sectors over it.
        let done = self.lower.read(offset, bufs)?;
        let mut sector = [0u8; SECTOR as usize];
        for (block, entry) in self.entries.range(first..=last) {
            for s in 0..SECTORS_PER_BLOCK {
                let at = block * BLOCK + s * SECTOR;
                if entry.mask & (1 << s) == 0 || at < offset || at + SECTOR > offset + len {
                    continue;
                }
                self.sector(entry, s, &mut sector)?;
                copy_into(bufs, at - offset, &sector)?;
            }
        }
        Ok(done)
    }

    fn write(&mut self, offset: u64, bufs: &[GuestSlice<'_>]) -> io::Result<Completion> {
        let len = total_len(bufs);
        self.check(offset, len)?;
        let mut pos = 0;
        while pos < len {
            let at = offset + pos;
            let block = at / BLOCK;
            let first_sector = (at % BLOCK) / SECTOR;
            let sectors = (SECTORS_PER_BLOCK - first_sector).min((len - pos) / SECTOR);
            let bytes = (sectors * SECTOR) as usize;
            let in_block = (first_sector * SECTOR) as usize;
            if !self.entries.contains_key(&block) {
                let place = if self.memory_blocks < self.max_memory_blocks {
                    self.memory_blocks += 1;
                    Place::Memory(vec![0u8; BLOCK as usize].into_boxed_slice())
                } else {
                    self.spill_slots += 1;
                    Place::Spill(self.spill_slots - 1)
                };
                self.entries.insert(block, Entry { mask: 0, place });
            }
            let Some(entry) = self.entries.get_mut(&block) else {
                return Err(io::Error::other("cache entry vanished"));
            };
            match &mut entry.place {
                Place::Memory(data) => copy_out(bufs, pos, &mut data[in_block..in_block + bytes])?,
                Place::Spill(slot) => {
                    let mut data = vec![0u8; bytes];
                    copy_out(bufs, pos, &mut data)?;
                    self.spill
                        .write_all_at(&data, *slot * BLOCK + in_block as u64)?;
                }
            }
            let bits = ((1u16 << sectors) - 1) as u8;
            entry.mask |= bits << first_sector;
            pos += bytes as u64;
        }
        Ok(Completion::NOW)
    }

    /// Writes `entries` to the layer below in runs of contiguous sectors.
    fn write_back(&mut self, entries: &BTreeMap<u64, Entry>) -> io::Result<()> {
        let mut run: Vec<u8> = Vec::new();
        let mut run_start = 0;
        let mut sector = [0u8; SECTOR as usize];
        for (block, entry) in entries {
            for s in 0..SECTORS_PER_BLOCK {
                if entry.mask & (1 << s) == 0 {
                    continue;
                }
                let at = block * BLOCK + s * SECTOR;
                if !run.is_empty()
                    && (run_start + run.len() as u64 != at || run.len() >= MAX_WRITEBACK_RUN)
                {
                    self.lower
                        .write(run_start, &[GuestSlice::from(&mut run[..])])?;
                    run.clear();
                }
                if run.is_empty() {
                    run_start = at;
                }
                self.sector(entry, s, &mut sector)?;
                run.extend_from_slice(&sector);
            }
        }
        if !run.is_empty() {
            self.lower
                .write(run_start, &[GuestSlice::from(&mut run[..])])?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<Completion> {
        if !self.powered {
            return Err(power_lost());
        }
        // On failure everything stays cached: writing a block back twice is harmless.
        let entries = std::mem::take(&mut self.entries);
        let result = self.write_back(&entries).and_then(|()| self.lower.flush());
        match result {
            Ok(done) => {
                self.memory_blocks = 0;
                self.spill_slots = 0;
                Ok(done)
            }
            Err(e) => {
                self.entries = entries;
                Err(e)
            }
        }
    }
}

impl Drop for Inner {
    /// An orderly end (not a power cut) writes the cache back, as a disk does on shutdown.
    fn drop(&mut self) {
        if self.powered && !self.entries.is_empty() {
            if let Err(e) = self.flush() {
                tracing::error!("write cache: writing back at shutdown failed: {e}");
            }
        }
    }
}

impl BlockBackend for WriteCache {
    fn capacity(&self) -> u64 {
        lock(&self.inner).capacity
    }

    fn read(&mut self, offset: u64, bufs: &[GuestSlice<'_>]) -> io::Result<Completion> {
        lock(&self.inner).read(offset, bufs)
    }

    fn write(&mut self, offset: u64, bufs: &[GuestSlice<'_>]) -> io::Result<Completion> {
        lock(&self.inner).write(offset, bufs)
    }

    fn flush(&mut self) -> io::Result<Completion> {
        lock(&self.inner).flush()
    }
}
