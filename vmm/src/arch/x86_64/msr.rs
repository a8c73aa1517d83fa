//! Model-specific registers every vCPU starts with.

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::VcpuFd;

use super::ArchError;

/// SYSENTER code segment.
pub const MSR_IA32_SYSENTER_CS: u32 = 0x174;
/// SYSENTER stack pointer.
pub const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
/// SYSENTER instruction pointer.
pub const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
/// SYSCALL target segments.
pub const MSR_STAR: u32 = 0xc000_0081;
/// 64-bit SYSCALL target.
pub const MSR_LSTAR: u32 = 0xc000_0082;
/// Compatibility-mode SYSCALL target.
pub const MSR_CSTAR: u32 = 0xc000_0083;
/// SYSCALL rflags mask.
pub const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
/// Swapped GS base.
pub const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
/// Miscellaneous feature enables.
pub const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
/// `IA32_MISC_ENABLE` bit: fast string operations.
pub const MISC_ENABLE_FAST_STRING: u64 = 1;
/// Default memory type and MTRR enable.
pub const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
/// `MTRRdefType`: MTRRs enabled, default type write-back (6).
pub const MTRR_ENABLE_WRITEBACK: u64 = (1 << 11) | 6;

/// The MSR values a vCPU is reset to before the kernel runs.
pub fn boot_msr_entries() -> Vec<kvm_msr_entry> {
    let entry = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    vec![
        entry(MSR_IA32_SYSENTER_CS, 0),
        entry(MSR_IA32_SYSENTER_ESP, 0),
        entry(MSR_IA32_SYSENTER_EIP, 0),
        entry(MSR_STAR, 0),
        entry(MSR_CSTAR, 0),
        entry(MSR_KERNEL_GS_BASE, 0),
        entry(MSR_SYSCALL_MASK, 0),
        entry(MSR_LSTAR, 0),
        entry(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        entry(MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WRITEBACK),
    ]
}

/// Writes [`boot_msr_entries`] to the vCPU; fails if KVM accepts fewer than all of them.
pub fn setup_msrs(vcpu: &VcpuFd) -> Result<(), ArchError> {
    let entries = boot_msr_entries();
    let msrs = Msrs::from_entries(&entries)
        .map_err(|e| ArchError::InvalidConfig(format!("cannot build the boot MSR list: {e:?}")))?;
    let written = vcpu
        .set_msrs(&msrs)
        .map_err(ArchError::kvm("KVM_SET_MSRS"))?;
    if written != entries.len() {
        let index = entries.get(written).map_or(0, |e| e.index);
        return Err(ArchError::InvalidConfig(format!(
            "KVM accepted only {written} of {} boot MSRs (rejected MSR {index:#x})",
            entries.len()
        )));
    }
    Ok(())
}
