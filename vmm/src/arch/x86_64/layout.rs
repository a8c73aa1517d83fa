//! The guest physical memory map and the fixed addresses the boot code uses.
//!
//! ```text
//! 0x0000_0000  real-mode IVT / BDA (RAM)
//! 0x0000_0500  GDT, then IDT at 0x520
//! 0x0000_7000  zero page (boot_params)
//! 0x0000_8ff0  boot stack top (grows down)
//! 0x0000_9000  PML4, 0xa000 PDPT, 0xb000-0xe000 four PDs (identity map of 0..4 GiB)
//! 0x0002_0000  kernel command line (CMDLINE_MAX_SIZE bytes)
//! 0x0009_fc00  EBDA start: [EBDA_START, HIMEM_START) is reserved, holds no RAM for the OS
//! 0x000e_0000  ACPI tables (RSDP first), up to 0x000f_ffff
//! 0x0010_0000  HIMEM_START: kernel, then RAM up to the MMIO gap
//! 0xc000_0000  MMIO gap start (no RAM from here to 4 GiB)
//! 0xd000_0000  virtio-mmio windows, MMIO_DEVICE_SIZE each
//! 0xfec0_0000  IOAPIC
//! 0xfee0_0000  local APIC
//! 0x1_0000_0000 RAM above the gap continues here
//! ```

use vm_memory::GuestAddress;

/// Where the kernel's 32/64-bit part is loaded (1 MiB), and where usable high RAM starts.
pub const HIMEM_START: u64 = 0x10_0000;

/// Start of the extended BIOS data area; low RAM in the e820 map ends here.
pub const EBDA_START: u64 = 0x9_fc00;

/// Global descriptor table.
pub const GDT_START: u64 = 0x500;
/// Interrupt descriptor table (empty; the kernel installs its own).
pub const IDT_START: u64 = 0x520;

/// The zero page (`struct boot_params`), passed to the kernel in `rsi`.
pub const ZERO_PAGE_START: u64 = 0x7000;

/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;

/// Level-4 page table of the boot identity map.
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table of the boot identity map.
pub const PDPTE_START: u64 = 0xa000;
/// First of the four page directories (2 MiB pages) covering 0..4 GiB.
pub const PDE_START: u64 = 0xb000;

/// Where the kernel command line is written.
pub const CMDLINE_START: u64 = 0x2_0000;
/// Largest command line, including the NUL; x86 Linux keeps at most 2048 bytes.
pub const CMDLINE_MAX_SIZE: usize = 2048;

/// Start of the ACPI tables area; the RSDP is written here.
pub const ACPI_TABLES_START: u64 = 0xe_0000;
/// End (exclusive) of the ACPI tables area.
pub const ACPI_TABLES_END: u64 = HIMEM_START;

/// Start of the 32-bit MMIO gap: no RAM between here and 4 GiB.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End (exclusive) of the MMIO gap; RAM above the gap continues here.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// Size of the MMIO gap.
pub const MMIO_GAP_SIZE: u64 = MMIO_GAP_END - MMIO_GAP_START;

/// First virtio-mmio window.
pub const MMIO_DEVICES_START: u64 = 0xd000_0000;
/// Size of one virtio-mmio window.
pub const MMIO_DEVICE_SIZE: u64 = 0x1000;
/// End (exclusive) of the range reserved for virtio-mmio windows.
pub const MMIO_DEVICES_END: u64 = 0xfec0_0000;

/// Where the VMM puts KVM's three-page TSS (`VmFd::set_tss_address`), inside the MMIO gap.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;

/// IOAPIC registers (MADT).
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
/// Local APIC registers (MADT).
pub const APIC_ADDR: u64 = 0xfee0_0000;

/// First GSI handed to virtio devices.
pub const IRQ_BASE: u32 = 5;
/// Last GSI handed to virtio devices (the KVM IOAPIC has 24 pins).
pub const IRQ_MAX: u32 = 23;
/// i8042 keyboard controller GSI.
pub const I8042_IRQ: u32 = 1;
/// COM1 GSI.
pub const SERIAL_IRQ: u32 = 4;
/// CMOS RTC GSI.
pub const RTC_IRQ: u32 = 8;

/// Whether `gsi` belongs to a legacy device (the guest's RTC driver, for one, refuses to
/// share its line: a virtio device on GSI 8 loses its interrupt and its driver fails).
pub const fn is_legacy_gsi(gsi: u32) -> bool {
    gsi == I8042_IRQ || gsi == SERIAL_IRQ || gsi == RTC_IRQ
}

/// How many virtio devices get a GSI of their own.
pub const VIRTIO_GSI_COUNT: u32 = {
    let mut n = 0;
    let mut gsi = IRQ_BASE;
    while gsi <= IRQ_MAX {
        if !is_legacy_gsi(gsi) {
            n += 1;
        }
        gsi += 1;
    }
    n
};

/// The GSI of the `index`-th virtio device: the pins from [`IRQ_BASE`] to [`IRQ_MAX`] in
/// order, skipping legacy ones.
pub fn virtio_gsi(index: u32) -> Option<u32> {
    (IRQ_BASE..=IRQ_MAX)
        .filter(|g| !is_legacy_gsi(*g))
        .nth(index as usize)
}

#[cfg(test)]
mod gsi_tests {
    use super::*;

    #[test]
    fn virtio_gsis_skip_legacy_lines_and_stay_on_the_ioapic() {
        let all: Vec<u32> = (0..VIRTIO_GSI_COUNT)
            .map(|i| virtio_gsi(i).unwrap())
            .collect();
        assert_eq!(
            &all[..4],
            &[5, 6, 7, 9],
            "the 4th device must not land on the RTC's 8"
        );
        assert!(all.iter().all(|g| !is_legacy_gsi(*g) && *g <= IRQ_MAX));
        assert_eq!(virtio_gsi(VIRTIO_GSI_COUNT), None);
        assert_eq!(VIRTIO_GSI_COUNT, 18);
    }
}

// The fixed areas must not overlap; checked at compile time.
const _: () = {
    assert!(GDT_START + 0x20 <= IDT_START);
    assert!(IDT_START + 8 <= ZERO_PAGE_START);
    assert!(ZERO_PAGE_START + 0x1000 <= BOOT_STACK_POINTER);
    assert!(BOOT_STACK_POINTER < PML4_START);
    assert!(PDE_START + 4 * 0x1000 <= CMDLINE_START);
    assert!(CMDLINE_START + CMDLINE_MAX_SIZE as u64 <= EBDA_START);
    assert!(EBDA_START <= ACPI_TABLES_START && ACPI_TABLES_END <= HIMEM_START);
    assert!(MMIO_GAP_START <= MMIO_DEVICES_START && MMIO_DEVICES_END <= IOAPIC_ADDR);
};

/// The RAM regions for `mem_size` bytes of guest RAM: from 0 up to the MMIO gap, and the
/// rest from 4 GiB on. Pass the result to `GuestMemoryMmap::from_ranges`.
pub fn ram_regions(mem_size: u64) -> Vec<(GuestAddress, usize)> {
    if mem_size <= MMIO_GAP_START {
        return vec![(GuestAddress(0), mem_size as usize)];
    }
    vec![
        (GuestAddress(0), MMIO_GAP_START as usize),
        (
            GuestAddress(MMIO_GAP_END),
            (mem_size - MMIO_GAP_START) as usize,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn small_guest_is_one_region() {
        assert_eq!(
            ram_regions(256 * MIB),
            vec![(GuestAddress(0), (256 * MIB) as usize)]
        );
    }

    #[test]
    fn three_gib_ends_exactly_at_the_gap() {
        assert_eq!(
            ram_regions(3 * GIB),
            vec![(GuestAddress(0), (3 * GIB) as usize)]
        );
    }

    #[test]
    fn six_gib_splits_around_the_gap() {
        let regions = ram_regions(6 * GIB);
        assert_eq!(regions.len(), 2);
        assert_eq!(regions[0], (GuestAddress(0), MMIO_GAP_START as usize));
        assert_eq!(regions[1].0, GuestAddress(4 * GIB));
        let total: u64 = regions.iter().map(|r| r.1 as u64).sum();
        assert_eq!(total, 6 * GIB);
        assert!(regions[1].0 .0 >= MMIO_GAP_END);
    }
}
