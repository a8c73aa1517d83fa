//! ACPI tables (placeholder while being written).
use vm_memory::{GuestAddress, GuestMemoryMmap};
use super::ArchError;
/// One virtio-mmio window as described in the DSDT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioDeviceInfo { pub base: u64, pub size: u64, pub gsi: u32 }
pub fn create_acpi_tables(_mem: &GuestMemoryMmap, _num_cpus: u8, _virtio: &[MmioDeviceInfo]) -> Result<GuestAddress, ArchError> { todo!() }
