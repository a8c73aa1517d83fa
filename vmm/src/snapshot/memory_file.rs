//! The memory file: guest RAM regions one after another, sparse.
//!
//! A full snapshot writes only pages that may hold data and are not all zero: a page may hold
//! data if the host has it (present or swapped, from `/proc/self/pagemap`) or if the file the
//! region is privately mapped from has data there (`SEEK_DATA`, for a VM that was itself
//! restored). Untouched and zero pages stay holes, which take no disk space and read back as
//! zeros. A diff snapshot writes the pages written since the last snapshot (KVM's dirty log
//! for the guest's writes, vm-memory's bitmap for the devices'), zero ones as holes too, and
//! lists them in its state.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// Guest page size.
pub const PAGE: usize = 4096;
/// pagemap: page present in RAM.
const PM_PRESENT: u64 = 1 << 63;
/// pagemap: page swapped out.
const PM_SWAPPED: u64 = 1 << 62;
/// pagemap entries read at once.
const PAGEMAP_BATCH: usize = 4096;

/// One guest RAM region as mapped in this process.
#[derive(Clone, Copy, Debug)]
pub struct RegionView {
    /// Host address of the region's first byte.
    pub host: *const u8,
    /// Bytes (a multiple of the page size).
    pub len: usize,
    /// Where the region's pages go in the memory file.
    pub file_offset: u64,
    /// Where the region's pages come from in the file it is privately mapped from, if any.
    pub backing_offset: Option<u64>,
}

/// A set of pages, one bit each (KVM's dirty-log layout).
pub type PageBits = Vec<u64>;

fn bit(bits: &[u64], i: usize) -> bool {
    bits.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
}

fn set_bit(bits: &mut [u64], i: usize) {
    if let Some(w) = bits.get_mut(i / 64) {
        *w |= 1 << (i % 64);
    }
}

/// An empty page set for `len` bytes.
pub fn no_pages(len: usize) -> PageBits {
    vec![0; (len / PAGE).div_ceil(64)]
}

/// Adds every page of `other` to `bits`.
pub fn union(bits: &mut PageBits, other: &[u64]) {
    for (a, b) in bits.iter_mut().zip(other) {
        *a |= *b;
    }
}

/// Pages of the region the host holds (present or swapped).
fn resident_pages(region: &RegionView) -> io::Result<PageBits> {
    let pagemap = File::open("/proc/self/pagemap")?;
    let pages = region.len / PAGE;
    let mut bits = no_pages(region.len);
    let first = region.host as u64 / PAGE as u64;
    let mut buf = vec![0u8; PAGEMAP_BATCH * 8];
    let mut done = 0;
    while done < pages {
        let n = (pages - done).min(PAGEMAP_BATCH);
        pagemap.read_exact_at(&mut buf[..n * 8], (first + done as u64) * 8)?;
        for (i, entry) in buf[..n * 8].chunks_exact(8).enumerate() {
            let e = u64::from_le_bytes(entry.try_into().unwrap_or_default());
            if e & (PM_PRESENT | PM_SWAPPED) != 0 {
                set_bit(&mut bits, done + i);
            }
        }
        done += n;
    }
    Ok(bits)
}

/// Pages of the region whose backing file has data (not holes).
fn backed_pages(region: &RegionView, backing: &File) -> io::Result<PageBits> {
    let mut bits = no_pages(region.len);
    let Some(start) = region.backing_offset else {
        return Ok(bits);
    };
    let end = start + region.len as u64;
    let fd = backing.as_raw_fd();
    let mut pos = start;
    while pos < end {
        // SAFETY: lseek on an open fd; no memory is touched.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // no data after pos
            }
            return Err(e);
        }
        let data = data as u64;
        if data >= end {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
        let hole = if hole < 0 {
            end
        } else {
            (hole as u64).min(end)
        };
        for page in (data - start) as usize / PAGE..(hole - start).div_ceil(PAGE as u64) as usize {
            set_bit(&mut bits, page);
        }
        pos = hole;
    }
    Ok(bits)
}

/// The bytes of page `page` of a region.
///
/// SAFETY (of the callers): the VM is paused and the device event loop parked while a
/// snapshot reads guest memory, so nothing writes these pages meanwhile.
fn page_bytes(region: &RegionView, page: usize) -> &[u8] {
    // SAFETY: `page` is inside the region, a live mapping of `len` bytes (see above).
    unsafe { std::slice::from_raw_parts(region.host.add(page * PAGE), PAGE) }
}

/// A page of zeros to compare with (a slice comparison is one `memcmp`).
static ZERO_PAGE: [u8; PAGE] = [0; PAGE];

fn is_zero(page: &[u8]) -> bool {
    page == &ZERO_PAGE[..page.len()]
}

/// Writes the pages of `wanted` (per region) that are not all zero into `file` at their
/// place; returns the number of bytes written.
fn write_pages(file: &File, regions: &[RegionView], wanted: &[PageBits]) -> io::Result<u64> {
    let mut written = 0;
    for (region, bits) in regions.iter().zip(wanted) {
        let pages = region.len / PAGE;
        let mut page = 0;
        while page < pages {
            if !bit(bits, page) || is_zero(page_bytes(region, page)) {
                page += 1;
                continue;
            }
            let start = page;
            while page < pages && bit(bits, page) && !is_zero(page_bytes(region, page)) {
                page += 1;
            }
            // SAFETY: pages start..page lie inside the region (see `page_bytes`).
            let run = unsafe {
                std::slice::from_raw_parts(region.host.add(start * PAGE), (page - start) * PAGE)
            };
            file.write_all_at(run, region.file_offset + (start * PAGE) as u64)?;
            written += run.len() as u64;
        }
    }
    Ok(written)
}

/// Writes a full, sparse memory image of `regions` into the empty `file` (sized to
/// `total_len`). `backing`: the file the regions are privately mapped from, if any.
pub fn write_full(
    file: &File,
    total_len: u64,
    regions: &[RegionView],
    backing: Option<&File>,
) -> io::Result<u64> {
    file.set_len(total_len)?;
    let mut wanted = Vec::with_capacity(regions.len());
    for r in regions {
        let mut bits = resident_pages(r)?;
        if let Some(b) = backing {
            union(&mut bits, &backed_pages(r, b)?);
        }
        wanted.push(bits);
    }
    write_pages(file, regions, &wanted)
}

/// Writes the `dirty` pages (per region) into the empty `file` (sized to `total_len`);
/// returns the runs of file pages (first, count) it covers, zero pages included.
pub fn write_diff(
    file: &File,
    total_len: u64,
    regions: &[RegionView],
    dirty: &[PageBits],
) -> io::Result<Vec<(u64, u64)>> {
    file.set_len(total_len)?;
    write_pages(file, regions, dirty)?;
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for (region, bits) in regions.iter().zip(dirty) {
        let base = region.file_offset / PAGE as u64;
        for page in 0..region.len / PAGE {
            if !bit(bits, page) {
                continue;
            }
            let p = base + page as u64;
            match runs.last_mut() {
                Some((first, count)) if *first + *count == p => *count += 1,
                _ => runs.push((p, 1)),
            }
        }
    }
    Ok(runs)
}

/// Copies the `runs` of file pages from a diff snapshot's `file` into guest memory.
pub fn apply_diff(file: &File, regions: &[RegionView], runs: &[(u64, u64)]) -> io::Result<()> {
    for &(first, count) in runs {
        let start = first.checked_mul(PAGE as u64);
        let len = count.checked_mul(PAGE as u64);
        let (Some(start), Some(len)) = (start, len) else {
            return Err(io::Error::other("page run out of range"));
        };
        let region = regions
            .iter()
            .find(|r| start >= r.file_offset && start + len <= r.file_offset + r.len as u64)
            .ok_or_else(|| io::Error::other(format!("page run at {start:#x} is outside RAM")))?;
        let at = (start - region.file_offset) as usize;
        // SAFETY: the run lies inside the region (checked above); nothing else runs in the VM
        // yet, so this is the only writer.
        let dst =
            unsafe { std::slice::from_raw_parts_mut(region.host.add(at) as *mut u8, len as usize) };
        file.read_exact_at(dst, start)?;
    }
    Ok(())
}
