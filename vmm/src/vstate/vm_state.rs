//! The VM-wide state KVM keeps: both PICs, the IOAPIC, the PIT and kvmclock.

use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_pit_state2, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};

use super::vm::VmError;

/// Interrupt controllers, PIT and clock.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VmState {
    pub pic_master: kvm_irqchip,
    pub pic_slave: kvm_irqchip,
    pub ioapic: kvm_irqchip,
    pub pit: kvm_pit_state2,
    pub clock: kvm_clock_data,
}

fn irqchip(fd: &VmFd, chip_id: u32) -> Result<kvm_irqchip, VmError> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    fd.get_irqchip(&mut chip)
        .map_err(|e| VmError::Setup("KVM_GET_IRQCHIP", e))?;
    Ok(chip)
}

/// Reads the VM state; every vCPU must be paused.
pub fn save_vm(fd: &VmFd) -> Result<VmState, VmError> {
    Ok(VmState {
        pic_master: irqchip(fd, KVM_IRQCHIP_PIC_MASTER)?,
        pic_slave: irqchip(fd, KVM_IRQCHIP_PIC_SLAVE)?,
        ioapic: irqchip(fd, KVM_IRQCHIP_IOAPIC)?,
        pit: fd
            .get_pit2()
            .map_err(|e| VmError::Setup("KVM_GET_PIT2", e))?,
        clock: fd
            .get_clock()
            .map_err(|e| VmError::Setup("KVM_GET_CLOCK", e))?,
    })
}

/// Writes `state` into a VM that has its irqchip and PIT, before any vCPU runs. kvmclock
/// resumes at the saved value: the guest sees no time pass while it was saved.
pub fn restore_vm(fd: &VmFd, state: &VmState) -> Result<(), VmError> {
    fd.set_pit2(&state.pit)
        .map_err(|e| VmError::Setup("KVM_SET_PIT2", e))?;
    let mut clock = state.clock;
    // Only the clock value is ours to set; the flags describe the old host's clock source.
    clock.flags = 0;
    fd.set_clock(&clock)
        .map_err(|e| VmError::Setup("KVM_SET_CLOCK", e))?;
    for (chip, id) in [
        (&state.pic_master, KVM_IRQCHIP_PIC_MASTER),
        (&state.pic_slave, KVM_IRQCHIP_PIC_SLAVE),
        (&state.ioapic, KVM_IRQCHIP_IOAPIC),
    ] {
        let mut chip = *chip;
        chip.chip_id = id;
        fd.set_irqchip(&chip)
            .map_err(|e| VmError::Setup("KVM_SET_IRQCHIP", e))?;
    }
    Ok(())
}
