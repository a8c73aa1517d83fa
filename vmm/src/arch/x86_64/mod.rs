//! x86_64 boot support: memory layout, kernel/initrd loading, the zero page, ACPI tables,
//! CPUID, and the initial vCPU state (registers, page tables, MSRs, LAPIC).
//!
//! Order of use when building a VM:
//! 1. `GuestMemoryMmap::from_ranges(&ram_regions(size))`; `set_tss_address(KVM_TSS_ADDRESS)`;
//!    `create_irq_chip()` (and optionally `create_pit2`).
//! 2. [`load_kernel`] (writes the bzImage setup header into the zero page), then
//!    [`load_initrd`] (honours the header's `initrd_addr_max`).
//! 3. [`create_acpi_tables`] -> RSDP address -> [`configure_system`].
//! 4. Every vCPU: `set_cpuid2(&vcpu_cpuid(..))`, then [`setup_vcpu_common`]; vCPU 0 also
//!    [`setup_boot_vcpu`] with the entry point from step 2.
//!
//! Verified on this machine's PVM `/dev/kvm`: a stock Debian 6.1 bzImage loaded this way
//! prints its e820 map, parses RSDP/XSDT/FADT/DSDT/MADT and reaches memory init before the
//! PVM emulator stops it (see `kvm_tests::real_bzimage_parses_e820_and_acpi_tables`).

pub mod acpi;
pub mod boot_params;
pub mod cpuid;
pub mod kernel;
pub mod lapic;
pub mod layout;
pub mod msr;
pub mod regs;

pub use acpi::{create_acpi_tables, MmioDeviceInfo};
pub use boot_params::configure_system;
pub use cpuid::vcpu_cpuid;
pub use kernel::{load_initrd, load_kernel};
pub use layout::ram_regions;
pub use regs::{setup_boot_vcpu, setup_vcpu_common};

/// Everything that can go wrong while preparing a guest to boot.
#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    /// The kernel image is neither an ELF vmlinux nor a bzImage.
    #[error(
        "kernel image is neither an ELF vmlinux (no \\x7fELF magic) nor a bzImage (no HdrS \
         magic at offset 0x202); pass an uncompressed vmlinux or a bzImage (e.g. /boot/vmlinuz-*)"
    )]
    UnknownKernelFormat,
    /// A bzImage without the 64-bit entry point (XLF_KERNEL_64).
    #[error("bzImage has no 64-bit entry point (boot protocol {version:#x}); use a 64-bit kernel")]
    BzImageNot64Bit {
        /// Boot protocol version from the setup header.
        version: u16,
    },
    /// The image is a recognised format but could not be loaded.
    #[error("cannot load {format} kernel: {source}")]
    KernelLoad {
        /// "ELF" or "bzImage".
        format: &'static str,
        /// The loader's reason.
        source: linux_loader::loader::Error,
    },
    /// Reading a kernel or initrd file failed.
    #[error("cannot read {what}: {source}")]
    Io {
        /// What was being read.
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The initrd does not fit below the MMIO gap.
    #[error(
        "initrd of {size} bytes does not fit in guest RAM below {limit:#x}; give the VM more \
         memory or use a smaller initrd"
    )]
    InitrdTooBig {
        /// Initrd size in bytes.
        size: u64,
        /// Top of usable low RAM.
        limit: u64,
    },
    /// The command line is longer than the boot protocol allows.
    #[error("kernel command line is {len} bytes, longer than the {max}-byte limit; shorten it")]
    CmdlineTooLong {
        /// Length including the NUL.
        len: usize,
        /// The limit, `layout::CMDLINE_MAX_SIZE`.
        max: usize,
    },
    /// The command line could not be written.
    #[error("cannot write the kernel command line: {0}")]
    Cmdline(linux_loader::loader::Error),
    /// Guest memory is missing a region the boot code writes to.
    #[error("cannot write {what} at {addr:#x} in guest memory: {source}")]
    GuestMemory {
        /// The structure being written.
        what: &'static str,
        /// Guest physical address.
        addr: u64,
        /// The memory error.
        source: vm_memory::GuestMemoryError,
    },
    /// Guest memory is too small for the boot layout.
    #[error("guest memory of {size} bytes is too small; at least {min} bytes are needed")]
    MemoryTooSmall {
        /// Guest RAM size.
        size: u64,
        /// Minimum needed.
        min: u64,
    },
    /// The ACPI tables do not fit in their area.
    #[error("ACPI tables need {needed} bytes but only {available} are reserved")]
    AcpiTooBig {
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// Too many vCPUs or devices for what the tables can describe.
    #[error("invalid machine description: {0}")]
    InvalidConfig(String),
    /// A KVM ioctl failed.
    #[error("KVM {op} failed: {source}")]
    Kvm {
        /// Which ioctl.
        op: &'static str,
        /// The errno.
        source: kvm_ioctls::Error,
    },
}

impl ArchError {
    /// Wraps a KVM error with the ioctl it came from.
    pub(crate) fn kvm(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> ArchError {
        move |source| ArchError::Kvm { op, source }
    }

    /// Wraps a guest memory error with what was being written where.
    pub(crate) fn mem(
        what: &'static str,
        addr: u64,
    ) -> impl FnOnce(vm_memory::GuestMemoryError) -> ArchError {
        move |source| ArchError::GuestMemory { what, addr, source }
    }
}

#[cfg(test)]
mod kvm_tests;
