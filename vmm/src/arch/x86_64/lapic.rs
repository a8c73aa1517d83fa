//! Local APIC set-up: LINT0 as ExtINT (so the legacy PIC path works) and LINT1 as NMI, as
//! a BIOS would leave them.

use kvm_bindings::kvm_lapic_state;
use kvm_ioctls::VcpuFd;

use super::ArchError;

/// Offset of the LVT LINT0 register in the LAPIC page.
pub const APIC_LVT0: usize = 0x350;
/// Offset of the LVT LINT1 register in the LAPIC page.
pub const APIC_LVT1: usize = 0x360;
/// LVT delivery mode: NMI.
pub const APIC_MODE_NMI: u32 = 0x4;
/// LVT delivery mode: ExtINT.
pub const APIC_MODE_EXTINT: u32 = 0x7;

fn get_reg(state: &kvm_lapic_state, offset: usize) -> u32 {
    let b = |i: usize| state.regs[offset + i] as u8;
    u32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

fn set_reg(state: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, byte) in value.to_le_bytes().iter().enumerate() {
        state.regs[offset + i] = *byte as _;
    }
}

fn with_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// The LVT LINT0 and LINT1 registers of a LAPIC state, for tests and snapshots.
pub fn lint_registers(state: &kvm_lapic_state) -> (u32, u32) {
    (get_reg(state, APIC_LVT0), get_reg(state, APIC_LVT1))
}

/// Sets LINT0 to ExtINT and LINT1 to NMI on the vCPU's in-kernel LAPIC (needs the irqchip).
pub fn setup_lint(vcpu: &VcpuFd) -> Result<(), ArchError> {
    let mut state = vcpu.get_lapic().map_err(ArchError::kvm("KVM_GET_LAPIC"))?;
    let lvt0 = get_reg(&state, APIC_LVT0);
    set_reg(
        &mut state,
        APIC_LVT0,
        with_delivery_mode(lvt0, APIC_MODE_EXTINT),
    );
    let lvt1 = get_reg(&state, APIC_LVT1);
    set_reg(
        &mut state,
        APIC_LVT1,
        with_delivery_mode(lvt1, APIC_MODE_NMI),
    );
    vcpu.set_lapic(&state)
        .map_err(ArchError::kvm("KVM_SET_LAPIC"))
}
