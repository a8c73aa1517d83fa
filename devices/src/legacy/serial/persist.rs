//! Saving and restoring the COM1 UART: its registers and receive FIFO.

use serde::{Deserialize, Serialize};
use vm_superio::serial::{NoEvents, SerialState};
use vm_superio::Serial;
use vmm_sys_util::eventfd::EventFd;

use super::{SerialDevice, SerialOutput};
use crate::legacy::{EventFdTrigger, LegacyError};
use crate::persist::Persist;

/// Snapshot of the UART registers and receive FIFO (mirrors vm-superio's `SerialState`,
/// which has no serde support).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialDeviceState {
    /// Divisor latch low byte.
    pub baud_divisor_low: u8,
    /// Divisor latch high byte.
    pub baud_divisor_high: u8,
    /// Interrupt enable register.
    pub interrupt_enable: u8,
    /// Interrupt identification register.
    pub interrupt_identification: u8,
    /// Line control register.
    pub line_control: u8,
    /// Line status register.
    pub line_status: u8,
    /// Modem control register.
    pub modem_control: u8,
    /// Modem status register.
    pub modem_status: u8,
    /// Scratch register.
    pub scratch: u8,
    /// Bytes waiting for the guest to read.
    pub in_buffer: Vec<u8>,
}

impl From<SerialState> for SerialDeviceState {
    fn from(s: SerialState) -> Self {
        SerialDeviceState {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

impl From<&SerialDeviceState> for SerialState {
    fn from(s: &SerialDeviceState) -> Self {
        SerialState {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer.clone(),
        }
    }
}

/// What the host supplies to a restored UART.
pub struct SerialHostParts {
    /// The irqfd of GSI 4.
    pub irq: EventFd,
    /// Where guest output goes from now on.
    pub out: SerialOutput,
}

impl Persist for SerialDevice {
    type State = SerialDeviceState;
    type HostParts = SerialHostParts;
    type Error = LegacyError;

    fn save(&self) -> SerialDeviceState {
        self.serial.state().into()
    }

    fn restore(parts: SerialHostParts, state: &SerialDeviceState) -> Result<Self, LegacyError> {
        let serial = Serial::from_state(
            &state.into(),
            EventFdTrigger(parts.irq),
            NoEvents,
            parts.out,
        )
        .map_err(|e| LegacyError::SerialState(format!("{e:?}")))?;
        Ok(SerialDevice { serial })
    }
}
