//! Guest memory: one host mapping per RAM region, each starting on a 2 MiB boundary.
//!
//! The alignment matters: KVM (and, nested, the emulated host's KVM) can back guest RAM with
//! 2 MiB pages only where the host virtual address and the guest physical address agree
//! modulo 2 MiB. A plain `mmap` lands anywhere on a 4 KiB boundary, which forced 4 KiB nested
//! page mappings and cost ~30% of a Debian boot in the emulated host. So each region is
//! reserved with 2 MiB of slack, placed on the first aligned address inside, and advised
//! for transparent huge pages. The mappings are anonymous and private: untouched pages cost
//! the host nothing.
//!
//! A restored VM gets the same aligned reservations, with the snapshot's memory file mapped
//! into them privately (`MAP_PRIVATE | MAP_FIXED`): pages load lazily when first touched, the
//! guest's writes stay in this process, and the file is never written. Restore time does not
//! grow with memory size.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::null_mut;
use std::sync::Arc;

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{GuestMemoryMmap, GuestRegionMmap};

use crate::arch::layout;

/// Guest memory as the VMM sees it.
pub type GuestMemory = devices::GuestMemory;

/// Host mappings are aligned to this (the x86_64 huge page size).
pub const HOST_ALIGN: usize = 2 << 20;

/// Why guest memory could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The kernel refused the mapping (usually: not enough address space or memory).
    #[error("cannot map {mib} MiB of guest memory: {source}")]
    Map {
        /// Size of the region that failed.
        mib: u64,
        /// What `mmap` said.
        source: io::Error,
    },
    /// vm-memory rejected the regions (overlap, zero size).
    #[error("guest memory layout: {0}")]
    Layout(String),
}

/// The host mappings behind a [`GuestMemory`]; unmapped on drop.
///
/// [`GuestMemory`] only borrows these mappings, so whoever holds this must drop it after
/// every clone of the memory is gone (the [`crate::Vmm`] does, after joining its threads).
#[derive(Debug)]
pub struct HostMappings {
    /// (start, length) of each whole reservation, slack included.
    reservations: Vec<(usize, usize)>,
    /// The file privately mapped under the regions (a restored VM), region `i` at file offset
    /// `offsets[i]`; `None` for anonymous memory.
    backing: Option<Arc<File>>,
    offsets: Vec<u64>,
}

impl HostMappings {
    /// The file behind the regions of a restored VM (pages not yet written read from it) and
    /// each region's offset in it; `None` for anonymous memory.
    pub fn backing(&self) -> Option<(Arc<File>, Vec<u64>)> {
        self.backing
            .as_ref()
            .map(|f| (f.clone(), self.offsets.clone()))
    }
}

// SAFETY: the struct only records addresses; it dereferences nothing.
unsafe impl Send for HostMappings {}
// SAFETY: as above.
unsafe impl Sync for HostMappings {}

impl Drop for HostMappings {
    fn drop(&mut self) {
        for &(start, len) in &self.reservations {
            // SAFETY: each reservation was mapped by `reserve_aligned` and is unmapped once.
            unsafe { libc::munmap(start as *mut libc::c_void, len) };
        }
    }
}

/// Creates `mem_mib` MiB of anonymous guest RAM laid out around the MMIO gap below 4 GiB,
/// every region on a 2 MiB-aligned host address.
pub fn create_guest_memory(mem_mib: u32) -> Result<(GuestMemory, HostMappings), MemoryError> {
    let size = u64::from(mem_mib) << 20;
    let mut mappings = HostMappings {
        reservations: Vec::new(),
        backing: None,
        offsets: Vec::new(),
    };
    let mut regions = Vec::new();
    for (start, len) in crate::arch::ram_regions(size) {
        let (host, reservation) = reserve_aligned(len)?;
        mappings.reservations.push(reservation);
        advise_huge_pages(host, len);
        // SAFETY: `host..host + len` lies inside a live private anonymous mapping that
        // `mappings` keeps until it is dropped.
        let region = unsafe {
            MmapRegionBuilder::new(len)
                .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
                .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE)
                .with_raw_mmap_pointer(host)
        }
        .build()
        .map_err(|e| MemoryError::Layout(e.to_string()))?;
        let region = GuestRegionMmap::new(region, start)
            .ok_or_else(|| MemoryError::Layout(format!("region at {:#x} overflows", start.0)))?;
        regions.push(region);
    }
    let mem =
        GuestMemoryMmap::from_regions(regions).map_err(|e| MemoryError::Layout(e.to_string()))?;
    Ok((mem, mappings))
}

/// Guest RAM of `mem_mib` MiB backed by `file`, which holds the regions one after another
/// (region `i` at the sum of the lengths before it), mapped privately and lazily. The file is
/// only read; it must be at least as long as the memory.
pub fn restore_guest_memory(
    mem_mib: u32,
    file: File,
) -> Result<(GuestMemory, HostMappings), MemoryError> {
    let size = u64::from(mem_mib) << 20;
    let file = Arc::new(file);
    let mut mappings = HostMappings {
        reservations: Vec::new(),
        backing: Some(file.clone()),
        offsets: Vec::new(),
    };
    let mut regions = Vec::new();
    let mut offset = 0u64;
    for (start, len) in crate::arch::ram_regions(size) {
        let (host, reservation) = reserve_aligned(len)?;
        mappings.reservations.push(reservation);
        // SAFETY: the target range lies inside the reservation just made (MAP_FIXED replaces
        // only our own mapping); the fd is open and `offset` is page-aligned.
        let mapped = unsafe {
            libc::mmap(
                host.cast(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_NORESERVE,
                file.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if mapped == libc::MAP_FAILED {
            return Err(MemoryError::Map {
                mib: (len >> 20) as u64,
                source: io::Error::last_os_error(),
            });
        }
        mappings.offsets.push(offset);
        // SAFETY: `host..host + len` is a live private file mapping that `mappings` keeps.
        let region = unsafe {
            MmapRegionBuilder::new(len)
                .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
                .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
                .with_raw_mmap_pointer(host)
        }
        .build()
        .map_err(|e| MemoryError::Layout(e.to_string()))?;
        let region = GuestRegionMmap::new(region, start)
            .ok_or_else(|| MemoryError::Layout(format!("region at {:#x} overflows", start.0)))?;
        regions.push(region);
        offset += len as u64;
    }
    let mem =
        GuestMemoryMmap::from_regions(regions).map_err(|e| MemoryError::Layout(e.to_string()))?;
    Ok((mem, mappings))
}

/// Maps `len` bytes of private anonymous memory at a 2 MiB-aligned address: returns that
/// address and the whole reservation to unmap later. The slack before and after is unmapped
/// at once, so only `len` bytes of address space stay in use.
fn reserve_aligned(len: usize) -> Result<(*mut u8, (usize, usize)), MemoryError> {
    let err = |source| MemoryError::Map {
        mib: (len >> 20) as u64,
        source,
    };
    let total = len.checked_add(HOST_ALIGN).ok_or_else(|| {
        err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "size overflows",
        ))
    })?;
    // SAFETY: a fresh mapping at an address of the kernel's choosing; nothing else is touched.
    let base = unsafe {
        libc::mmap(
            null_mut(),
            total,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(err(io::Error::last_os_error()));
    }
    let base = base as usize;
    let aligned = base.next_multiple_of(HOST_ALIGN);
    let head = aligned - base;
    let tail = total - head - len;
    // SAFETY: both ranges lie inside the mapping made above and outside [aligned, +len).
    unsafe {
        if head > 0 {
            libc::munmap(base as *mut libc::c_void, head);
        }
        if tail > 0 {
            libc::munmap((aligned + len) as *mut libc::c_void, tail);
        }
    }
    Ok((aligned as *mut u8, (aligned, len)))
}

/// Asks for transparent huge pages where the host's THP mode is `madvise`; harmless (and
/// ignored) elsewhere.
fn advise_huge_pages(host: *mut u8, len: usize) {
    // SAFETY: advice on a range this module mapped; it changes no contents.
    let rc = unsafe { libc::madvise(host as *mut libc::c_void, len, libc::MADV_HUGEPAGE) };
    if rc != 0 {
        tracing::debug!("MADV_HUGEPAGE: {}", io::Error::last_os_error());
    }
}

/// Bytes of RAM the guest has below the MMIO gap (the e820 map and ACPI depend on it).
pub fn low_ram_end(mem_mib: u32) -> u64 {
    (u64::from(mem_mib) << 20).min(layout::MMIO_GAP_START)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend as _, GuestMemoryRegion};

    #[test]
    fn every_region_starts_on_a_huge_page_boundary() {
        // 4 GiB + 64 MiB: two regions, around the MMIO gap.
        for mib in [1, 64, 255, 256, 4096 + 64] {
            let (mem, _maps) = create_guest_memory(mib).unwrap();
            let mut total = 0;
            for region in mem.iter() {
                let host = region.as_ptr() as usize;
                assert_eq!(host % HOST_ALIGN, 0, "{mib} MiB: region at {host:#x}");
                total += region.len();
            }
            assert_eq!(total, u64::from(mib) << 20);
        }
    }

    #[test]
    fn memory_reads_back_and_starts_zeroed() {
        let (mem, _maps) = create_guest_memory(8).unwrap();
        assert_eq!(mem.read_obj::<u64>(GuestAddress(0x1000)).unwrap(), 0);
        mem.write_obj(0xfeed_u64, GuestAddress(0x7f_fff8)).unwrap();
        assert_eq!(
            mem.read_obj::<u64>(GuestAddress(0x7f_fff8)).unwrap(),
            0xfeed
        );
        assert!(mem.write_obj(1u64, GuestAddress(0x80_0000)).is_err());
    }

    #[test]
    fn restored_memory_reads_the_file_and_never_writes_it() {
        let dir = std::env::temp_dir().join(format!("kiln-memfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("memory");
        let f = File::create(&path).unwrap();
        f.set_len(16 << 20).unwrap();
        std::os::unix::fs::FileExt::write_at(&f, &0xabcd_u64.to_le_bytes(), 0x20_0000).unwrap();
        drop(f);
        let (mem, maps) = restore_guest_memory(16, File::open(&path).unwrap()).unwrap();
        let host = mem.iter().next().unwrap().as_ptr() as usize;
        assert_eq!(host % HOST_ALIGN, 0);
        assert_eq!(
            mem.read_obj::<u64>(GuestAddress(0x20_0000)).unwrap(),
            0xabcd
        );
        mem.write_obj(7u64, GuestAddress(0x20_0000)).unwrap();
        mem.write_obj(9u64, GuestAddress(0x1000)).unwrap();
        assert_eq!(mem.read_obj::<u64>(GuestAddress(0x20_0000)).unwrap(), 7);
        drop(mem);
        drop(maps);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[0x20_0000..0x20_0008], &0xabcd_u64.to_le_bytes());
        assert!(bytes[0x1000..0x1008].iter().all(|b| *b == 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dropping_the_mappings_returns_the_address_space() {
        let maps_before = std::fs::read_to_string("/proc/self/maps").unwrap();
        let (mem, maps) = create_guest_memory(64).unwrap();
        let host = mem.iter().next().unwrap().as_ptr() as usize;
        let line = format!("{host:x}-");
        assert!(std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .contains(&line));
        drop(mem);
        drop(maps);
        let after = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert!(
            !after.contains(&line) || maps_before.contains(&line),
            "mapping at {host:#x} still present"
        );
    }
}
