//! The legacy PC devices: COM1 serial, i8042 (reset), CMOS RTC, ACPI PM; new, or restored
//! from saved state.

use std::io::Write;
use std::sync::{Arc, Mutex};

use devices::legacy::{
    acpi_pm, AcpiPmDevice, AcpiPmHostParts, I8042HostParts, Rtc, SerialDevice, SerialHostParts,
    I8042,
};
use devices::persist::Persist;
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

use super::handles::LegacyHandles;
use super::persist::DevicesState;
use super::{irqfd, DeviceError, DeviceManager};
use crate::arch::layout;

/// What the host gives the legacy devices.
pub struct LegacyParts {
    pub serial_out: Box<dyn Write + Send>,
    pub i8042_reset: EventFd,
    pub acpi_poweroff: EventFd,
    pub acpi_reset: EventFd,
}

impl DeviceManager {
    /// Adds the legacy PC devices, new or (with `saved`) restored.
    pub fn add_legacy(
        &mut self,
        vm: &VmFd,
        parts: LegacyParts,
        saved: Option<&DevicesState>,
    ) -> Result<(), DeviceError> {
        let serial_irq = irqfd(vm, layout::SERIAL_IRQ, "the serial interrupt")?;
        let kbd_irq = irqfd(vm, layout::I8042_IRQ, "the i8042 interrupt")?;
        let bad = |what: &str, e: String| DeviceError::Device(format!("{what}: {e}"));
        let handles = match saved {
            None => LegacyHandles {
                serial: Arc::new(Mutex::new(SerialDevice::new(serial_irq, parts.serial_out))),
                i8042: Arc::new(Mutex::new(I8042::new(parts.i8042_reset, kbd_irq))),
                rtc: Arc::new(Mutex::new(Rtc::new())),
                acpi_pm: Arc::new(Mutex::new(AcpiPmDevice::new(
                    parts.acpi_poweroff,
                    parts.acpi_reset,
                ))),
            },
            Some(s) => LegacyHandles {
                serial: Arc::new(Mutex::new(
                    SerialDevice::restore(
                        SerialHostParts {
                            irq: serial_irq,
                            out: parts.serial_out,
                        },
                        &s.serial,
                    )
                    .map_err(|e| bad("serial", e.to_string()))?,
                )),
                i8042: Arc::new(Mutex::new(
                    I8042::restore(
                        I8042HostParts {
                            reset_evt: parts.i8042_reset,
                            irq: kbd_irq,
                        },
                        &s.i8042,
                    )
                    .map_err(|e| bad("i8042", e.to_string()))?,
                )),
                rtc: Arc::new(Mutex::new(
                    Rtc::restore((), &s.rtc).map_err(|e| bad("RTC", e.to_string()))?,
                )),
                acpi_pm: Arc::new(Mutex::new(
                    AcpiPmDevice::restore(
                        AcpiPmHostParts {
                            poweroff: parts.acpi_poweroff,
                            reset: parts.acpi_reset,
                        },
                        &(),
                    )
                    .map_err(|e| bad("ACPI PM", e.to_string()))?,
                )),
            },
        };
        self.add_pio(0x3f8, 8, handles.serial.clone())?;
        self.add_pio(0x60, 1, handles.i8042.clone())?;
        self.add_pio(0x64, 1, handles.i8042.clone())?;
        self.add_pio(0x70, 2, handles.rtc.clone())?;
        self.add_pio(
            acpi_pm::PORT_BASE,
            acpi_pm::PORT_LEN,
            handles.acpi_pm.clone(),
        )?;
        self.legacy = Some(handles);
        Ok(())
    }
}
