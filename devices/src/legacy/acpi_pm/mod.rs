//! ACPI power management ports of a hardware-reduced ACPI platform.
//!
//! | port  | register                  | access                                           |
//! |-------|---------------------------|--------------------------------------------------|
//! | 0x600 | sleep control (FADT `SLEEP_CONTROL_REG`) | write `SLP_TYP << 2 \| SLP_EN (0x20)`; S5 = power off |
//! | 0x601 | sleep status (FADT `SLEEP_STATUS_REG`)   | reads 0 (no wake events); writes ignored |
//! | 0x602 | reset (FADT `RESET_REG`)                 | write `RESET_VALUE` to reset the machine |
//! | 0x603 | reserved                                 | reads 0                                  |
//!
//! Power off and reset signal two different event fds, so the VMM can tell "guest powered
//! off" from "guest rebooted".

use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;
use vmm_sys_util::eventfd::EventFd;

use crate::legacy::port_of;

mod persist;
pub use persist::AcpiPmHostParts;

/// First port of the block.
pub const PORT_BASE: u16 = 0x600;
/// Ports in the block (reserved in the DSDT).
pub const PORT_LEN: u16 = 4;
/// Sleep control register.
pub const SLEEP_CONTROL_PORT: u16 = PORT_BASE;
/// Sleep status register.
pub const SLEEP_STATUS_PORT: u16 = PORT_BASE + 1;
/// Reset register.
pub const RESET_PORT: u16 = PORT_BASE + 2;
/// Value the guest writes to [`RESET_PORT`] (the FADT's `RESET_VALUE`).
pub const RESET_VALUE: u8 = 0x0f;
/// Sleep type of S5 (soft off), as in the DSDT's `\_S5_` package.
pub const S5_SLEEP_TYPE: u8 = 5;
/// Sleep control: sleep enable.
pub const SLP_EN: u8 = 0x20;
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0x7;

/// The ACPI PM port block.
#[derive(Debug)]
pub struct AcpiPmDevice {
    poweroff: EventFd,
    reset: EventFd,
}

impl AcpiPmDevice {
    /// A device writing `poweroff` on S5 entry and `reset` on a reset request.
    pub fn new(poweroff: EventFd, reset: EventFd) -> Self {
        AcpiPmDevice { poweroff, reset }
    }

    fn signal(fd: &EventFd, what: &str) {
        tracing::info!("guest requested {what}");
        if let Err(e) = fd.write(1) {
            tracing::error!("cannot signal guest {what}: {e}");
        }
    }

    fn sleep_control(&self, value: u8) {
        let sleep_type = (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK;
        if value & SLP_EN == 0 {
            return;
        }
        if sleep_type == S5_SLEEP_TYPE {
            Self::signal(&self.poweroff, "power off");
        } else {
            tracing::warn!(
                sleep_type,
                "guest asked for an unsupported sleep state; ignored"
            );
        }
    }
}

impl MutDevicePio for AcpiPmDevice {
    fn pio_read(&mut self, _base: PioAddress, _offset: PioAddressOffset, data: &mut [u8]) {
        data.fill(0);
    }

    fn pio_write(&mut self, base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        match (port_of(base, offset), data) {
            (Some(SLEEP_CONTROL_PORT), [value]) => self.sleep_control(*value),
            (Some(RESET_PORT), [RESET_VALUE]) => Self::signal(&self.reset, "reset"),
            _ => tracing::debug!(len = data.len(), "ignored ACPI PM write"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> (AcpiPmDevice, EventFd, EventFd) {
        let off = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let reset = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let dev = AcpiPmDevice::new(off.try_clone().unwrap(), reset.try_clone().unwrap());
        (dev, off, reset)
    }

    #[test]
    fn s5_with_slp_en_powers_off_only() {
        let (mut dev, off, reset) = device();
        // What ACPICA's acpi_hw_extended_sleep writes: clear wake status, then type|enable.
        dev.pio_write(PioAddress(SLEEP_STATUS_PORT), 0, &[0x80]);
        dev.pio_write(
            PioAddress(SLEEP_CONTROL_PORT),
            0,
            &[(S5_SLEEP_TYPE << 2) | SLP_EN],
        );
        assert_eq!(off.read().unwrap(), 1);
        assert!(reset.read().is_err());
    }

    #[test]
    fn reset_value_reboots_only() {
        let (mut dev, off, reset) = device();
        dev.pio_write(
            PioAddress(PORT_BASE),
            RESET_PORT - PORT_BASE,
            &[RESET_VALUE],
        );
        assert_eq!(reset.read().unwrap(), 1);
        assert!(off.read().is_err());
    }

    #[test]
    fn other_writes_do_nothing() {
        let (mut dev, off, reset) = device();
        dev.pio_write(PioAddress(SLEEP_CONTROL_PORT), 0, &[S5_SLEEP_TYPE << 2]); // no SLP_EN
        dev.pio_write(PioAddress(SLEEP_CONTROL_PORT), 0, &[(3 << 2) | SLP_EN]); // S3
        dev.pio_write(PioAddress(RESET_PORT), 0, &[0x01]);
        dev.pio_write(PioAddress(RESET_PORT), 0, &[RESET_VALUE, 0]);
        assert!(off.read().is_err());
        assert!(reset.read().is_err());
        let mut status = [0xffu8];
        dev.pio_read(PioAddress(SLEEP_STATUS_PORT), 0, &mut status);
        assert_eq!(status, [0]);
    }
}
