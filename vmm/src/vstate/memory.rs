//! Guest memory: anonymous private mappings, reserved lazily so that an idle guest costs the
//! host almost nothing until it touches its pages.

use vm_memory::GuestMemoryMmap;

use crate::arch::layout;

/// Guest memory as the VMM sees it.
pub type GuestMemory = GuestMemoryMmap<()>;

/// Creates `mem_mib` MiB of guest RAM laid out around the MMIO gap below 4 GiB.
pub fn create_guest_memory(mem_mib: u32) -> Result<GuestMemory, vm_memory::mmap::FromRangesError> {
    let size = u64::from(mem_mib) << 20;
    GuestMemoryMmap::from_ranges(&crate::arch::ram_regions(size))
}

/// Bytes of RAM the guest has below the MMIO gap (the e820 map and ACPI depend on it).
pub fn low_ram_end(mem_mib: u32) -> u64 {
    (u64::from(mem_mib) << 20).min(layout::MMIO_GAP_START)
}
