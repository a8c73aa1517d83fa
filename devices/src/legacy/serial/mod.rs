//! COM1: a 16550A UART (vm-superio `Serial`) at 0x3f8..0x3ff, interrupt on GSI 4 through an
//! irqfd, guest output to any writer (stdout or a log file).

use std::io::Write;

use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;
use vm_superio::serial::NoEvents;
use vm_superio::Serial;
use vmm_sys_util::eventfd::EventFd;

use crate::legacy::{port_of, EventFdTrigger, LegacyError};

mod persist;
pub use persist::{SerialDeviceState, SerialHostParts};

/// First COM1 port.
pub const COM1_PORT_BASE: u16 = 0x3f8;
/// Number of UART ports.
pub const PORT_LEN: u16 = 8;

/// Where guest output goes.
pub type SerialOutput = Box<dyn Write + Send>;

/// The COM1 UART.
pub struct SerialDevice {
    pub(super) serial: Serial<EventFdTrigger, NoEvents, SerialOutput>,
}

impl std::fmt::Debug for SerialDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialDevice").finish_non_exhaustive()
    }
}

impl SerialDevice {
    /// A UART in reset state raising `irq` (registered by the VMM as the irqfd of GSI 4) and
    /// writing guest output to `out`.
    pub fn new(irq: EventFd, out: SerialOutput) -> Self {
        SerialDevice {
            serial: Serial::new(EventFdTrigger(irq), out),
        }
    }

    /// Queues host input for the guest to read; returns how many bytes fit in the FIFO.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> Result<usize, LegacyError> {
        self.serial
            .enqueue_raw_bytes(bytes)
            .map_err(|e| LegacyError::SerialInput(format!("{e:?}")))
    }

    /// Flushes buffered guest output.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.serial.writer_mut().flush()
    }

    fn register(base: PioAddress, offset: PioAddressOffset) -> Option<u8> {
        let port = port_of(base, offset)?;
        let reg = port.checked_sub(COM1_PORT_BASE)?;
        (reg < PORT_LEN).then_some(reg as u8)
    }
}

impl MutDevicePio for SerialDevice {
    fn pio_read(&mut self, base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        match (Self::register(base, offset), data.len()) {
            (Some(reg), 1) => data[0] = self.serial.read(reg),
            _ => data.fill(0xff),
        }
    }

    fn pio_write(&mut self, base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        let (Some(reg), [value]) = (Self::register(base, offset), data) else {
            tracing::debug!(
                port = base.0.wrapping_add(offset),
                len = data.len(),
                "ignored serial write"
            );
            return;
        };
        if let Err(e) = self.serial.write(reg, *value) {
            tracing::warn!("serial output failed: {e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::Persist;
    use std::sync::{Arc, Mutex};

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    const IER: u16 = 1;
    const LSR: u16 = 5;

    fn device() -> (SerialDevice, EventFd, SharedBuf) {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let out = SharedBuf::default();
        let dev = SerialDevice::new(irq.try_clone().unwrap(), Box::new(out.clone()));
        (dev, irq, out)
    }

    #[test]
    fn guest_output_reaches_the_writer() {
        let (mut dev, _irq, out) = device();
        for b in b"hello\n" {
            dev.pio_write(PioAddress(COM1_PORT_BASE), 0, &[*b]);
        }
        assert_eq!(out.0.lock().unwrap().as_slice(), b"hello\n");
    }

    #[test]
    fn thr_empty_interrupt_fires_the_irqfd() {
        let (mut dev, irq, _out) = device();
        dev.pio_write(PioAddress(COM1_PORT_BASE), IER, &[0x02]); // enable THR-empty irq
        dev.pio_write(PioAddress(COM1_PORT_BASE), 0, b"x");
        assert!(irq.read().unwrap() >= 1);
    }

    #[test]
    fn line_status_says_transmitter_empty() {
        let (mut dev, _irq, _out) = device();
        let mut lsr = [0u8];
        dev.pio_read(PioAddress(COM1_PORT_BASE), LSR, &mut lsr);
        assert_eq!(lsr[0] & 0x60, 0x60);
    }

    #[test]
    fn input_is_readable_and_state_round_trips() {
        let (mut dev, _irq, _out) = device();
        assert_eq!(dev.enqueue_input(b"ab").unwrap(), 2);
        dev.pio_write(PioAddress(COM1_PORT_BASE), 7, &[0x5a]); // scratch
        let state = dev.save();
        let json = serde_json::to_string(&state).unwrap();
        let back: SerialDeviceState = serde_json::from_str(&json).unwrap();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let parts = SerialHostParts {
            irq,
            out: Box::new(SharedBuf::default()),
        };
        let mut restored = SerialDevice::restore(parts, &back).unwrap();
        let mut byte = [0u8];
        restored.pio_read(PioAddress(COM1_PORT_BASE), 0, &mut byte);
        assert_eq!(byte[0], b'a');
        restored.pio_read(PioAddress(COM1_PORT_BASE), 7, &mut byte);
        assert_eq!(byte[0], 0x5a);
    }

    #[test]
    fn bad_accesses_are_ignored() {
        let (mut dev, _irq, out) = device();
        dev.pio_write(PioAddress(COM1_PORT_BASE), 0, &[1, 2]);
        dev.pio_write(PioAddress(COM1_PORT_BASE), 9, &[1]);
        dev.pio_write(PioAddress(0xffff), 0xffff, &[1]);
        let mut wide = [0u8; 2];
        dev.pio_read(PioAddress(COM1_PORT_BASE), 0, &mut wide);
        assert_eq!(wide, [0xff, 0xff]);
        assert!(out.0.lock().unwrap().is_empty());
    }

    #[test]
    fn oversized_saved_fifo_is_refused() {
        let state = SerialDeviceState {
            in_buffer: vec![0; 1 << 16],
            ..vm_superio::serial::SerialState::default().into()
        };
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let parts = SerialHostParts {
            irq,
            out: Box::new(std::io::sink()),
        };
        assert!(SerialDevice::restore(parts, &state).is_err());
    }
}
