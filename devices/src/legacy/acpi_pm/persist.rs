//! The ACPI PM ports keep no state: restoring one only needs the host's event fds.

use vmm_sys_util::eventfd::EventFd;

use super::AcpiPmDevice;
use crate::persist::Persist;

/// What the host supplies to a restored ACPI PM block.
pub struct AcpiPmHostParts {
    /// Written when the guest enters S5.
    pub poweroff: EventFd,
    /// Written when the guest resets through the reset register.
    pub reset: EventFd,
}

impl Persist for AcpiPmDevice {
    type State = ();
    type HostParts = AcpiPmHostParts;
    type Error = std::convert::Infallible;

    fn save(&self) {}

    fn restore(parts: AcpiPmHostParts, _state: &()) -> Result<Self, Self::Error> {
        Ok(AcpiPmDevice::new(parts.poweroff, parts.reset))
    }
}
