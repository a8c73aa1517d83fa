//! Legacy PC devices on the port I/O bus: COM1 serial, the i8042 keyboard controller (reset
//! line), the CMOS RTC, and the ACPI PM ports (power off / reset for a hardware-reduced ACPI
//! platform).
//!
//! Every device implements [`vm_device::MutDevicePio`] and matches on the absolute port
//! (`base + offset`), so it works whether the VMM registers one range or one per port.

pub mod acpi_pm;
pub mod i8042;
pub mod rtc;
pub mod serial;

pub use acpi_pm::{AcpiPmDevice, AcpiPmHostParts};
pub use i8042::{I8042HostParts, I8042State, I8042};
pub use rtc::{Rtc, RtcState};
pub use serial::{SerialDevice, SerialDeviceState, SerialHostParts};

use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

/// An [`EventFd`] as a vm-superio [`Trigger`]: triggering writes 1 to it. For an interrupt
/// the VMM registers the fd as an irqfd; for reset/power-off it polls it.
#[derive(Debug)]
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Errors of the legacy devices.
#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    /// A saved serial state cannot be restored.
    #[error("cannot restore serial state: {0}")]
    SerialState(String),
    /// Queueing input bytes for the guest failed.
    #[error("cannot queue serial input: {0}")]
    SerialInput(String),
}

/// The absolute port of a PIO access, or `None` if it overflows the 16-bit port space.
pub(crate) fn port_of(base: PioAddress, offset: PioAddressOffset) -> Option<u16> {
    base.0.checked_add(offset)
}
