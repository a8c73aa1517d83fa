//! The i8042 keyboard controller at ports 0x60 (data) and 0x64 (status/command).
//!
//! The reset line is vm-superio's `I8042Device` (command 0xfe on 0x64 signals the reset
//! event fd). Around it this answers the controller commands Linux's i8042 driver polls for
//! at boot (read/write CTR, self tests) and acknowledges keyboard commands, so the driver
//! finds a working controller at once instead of waiting out its timeouts. There is no AUX
//! (mouse) port: the AUX loopback and interface tests fail, which makes Linux skip it.

use std::collections::VecDeque;

use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;
use vm_superio::I8042Device;
use vmm_sys_util::eventfd::EventFd;

use crate::legacy::{port_of, EventFdTrigger};

mod persist;
pub use persist::{I8042HostParts, I8042State};

/// Data port.
pub const DATA_PORT: u16 = 0x60;
/// Status (read) / command (write) port.
pub const COMMAND_PORT: u16 = 0x64;

/// Status: output buffer full.
const STATUS_OBF: u8 = 0x01;
/// Status: system flag (self test passed).
const STATUS_SYS: u8 = 0x04;
/// Status: keyboard not inhibited.
const STATUS_UNLOCKED: u8 = 0x10;
/// Status: the byte in the output buffer is from the AUX port.
const STATUS_AUXDATA: u8 = 0x20;

/// CTR: keyboard interrupt enable.
const CTR_KBD_INT: u8 = 0x01;
/// CTR: system flag.
const CTR_SYS: u8 = 0x04;
/// CTR: keyboard disabled.
const CTR_KBD_DISABLE: u8 = 0x10;
/// CTR: AUX disabled.
const CTR_AUX_DISABLE: u8 = 0x20;
/// CTR: translate to scan code set 1.
const CTR_XLATE: u8 = 0x40;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_AUX_DISABLE: u8 = 0xa7;
const CMD_AUX_ENABLE: u8 = 0xa8;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_READ_OUTPORT: u8 = 0xd0;
const CMD_WRITE_OUTPORT: u8 = 0xd1;
const CMD_WRITE_KBD_OUT: u8 = 0xd2;
const CMD_WRITE_AUX_OUT: u8 = 0xd3;
const CMD_WRITE_AUX: u8 = 0xd4;
const CMD_RESET_CPU: u8 = 0xfe;

const SELF_TEST_OK: u8 = 0x55;
const PORT_TEST_OK: u8 = 0x00;
/// AUX interface test result "clock line stuck low": there is no mouse.
const AUX_TEST_FAIL: u8 = 0x01;
/// AUX loopback answer that is not the byte sent: there is no mouse.
const AUX_LOOP_FAIL: u8 = 0xff;

const KBD_ACK: u8 = 0xfa;
const KBD_BAT_OK: u8 = 0xaa;
const KBD_ECHO: u8 = 0xee;
const KBD_CMD_GET_ID: u8 = 0xf2;
const KBD_CMD_SCANCODE_SET: u8 = 0xf0;
const KBD_CMD_RESET: u8 = 0xff;
/// MF2 keyboard ID.
const KBD_ID: [u8; 2] = [0xab, 0x83];

/// Bounded so a guest cannot grow it.
const OUTPUT_CAPACITY: usize = 16;

/// The i8042 controller.
#[derive(Debug)]
pub struct I8042 {
    reset: I8042Device<EventFdTrigger>,
    irq: EventFd,
    ctr: u8,
    outport: u8,
    pending_command: Option<u8>,
    pending_kbd_command: Option<u8>,
    output: VecDeque<(u8, bool)>,
}

impl I8042 {
    /// A controller that writes `reset_evt` when the guest asks for a CPU reset and `irq`
    /// (the irqfd of GSI 1) when a keyboard byte is ready and the guest enabled the interrupt.
    pub fn new(reset_evt: EventFd, irq: EventFd) -> Self {
        Self::from_saved(&I8042State::default(), reset_evt, irq)
    }

    /// A controller in `state`.
    fn from_saved(state: &I8042State, reset_evt: EventFd, irq: EventFd) -> Self {
        I8042 {
            reset: I8042Device::new(EventFdTrigger(reset_evt)),
            irq,
            ctr: state.ctr,
            outport: state.outport,
            pending_command: state.pending_command,
            pending_kbd_command: state.pending_kbd_command,
            output: state.output.iter().copied().take(OUTPUT_CAPACITY).collect(),
        }
    }

    fn push(&mut self, byte: u8, aux: bool) {
        if self.output.len() >= OUTPUT_CAPACITY {
            return;
        }
        self.output.push_back((byte, aux));
        if !aux && self.ctr & CTR_KBD_INT != 0 {
            if let Err(e) = self.irq.write(1) {
                tracing::warn!("i8042 interrupt failed: {e}");
            }
        }
    }

    fn status(&self) -> u8 {
        let mut status = STATUS_SYS | STATUS_UNLOCKED;
        if let Some((_, aux)) = self.output.front() {
            status |= STATUS_OBF;
            if *aux {
                status |= STATUS_AUXDATA;
            }
        }
        status
    }

    fn command(&mut self, cmd: u8) {
        match cmd {
            CMD_READ_CTR => self.push(self.ctr, false),
            CMD_WRITE_CTR | CMD_WRITE_OUTPORT | CMD_WRITE_KBD_OUT | CMD_WRITE_AUX_OUT
            | CMD_WRITE_AUX => self.pending_command = Some(cmd),
            CMD_AUX_DISABLE => self.ctr |= CTR_AUX_DISABLE,
            CMD_AUX_ENABLE => self.ctr &= !CTR_AUX_DISABLE,
            CMD_AUX_TEST => self.push(AUX_TEST_FAIL, false),
            CMD_SELF_TEST => self.push(SELF_TEST_OK, false),
            CMD_KBD_TEST => self.push(PORT_TEST_OK, false),
            CMD_KBD_DISABLE => self.ctr |= CTR_KBD_DISABLE,
            CMD_KBD_ENABLE => self.ctr &= !CTR_KBD_DISABLE,
            CMD_READ_OUTPORT => self.push(self.outport, false),
            CMD_RESET_CPU => {
                if let Err(e) = self.reset.write((COMMAND_PORT - DATA_PORT) as u8, cmd) {
                    tracing::error!("i8042 reset event failed: {e}");
                }
            }
            _ => tracing::debug!(cmd, "ignored i8042 command"),
        }
    }

    fn data(&mut self, byte: u8) {
        match self.pending_command.take() {
            Some(CMD_WRITE_CTR) => self.ctr = byte,
            Some(CMD_WRITE_OUTPORT) => self.outport = byte,
            Some(CMD_WRITE_KBD_OUT) => self.push(byte, false),
            Some(CMD_WRITE_AUX_OUT) => self.push(AUX_LOOP_FAIL, true),
            Some(_) => {} // to the absent AUX device
            None => self.keyboard(byte),
        }
    }

    fn keyboard(&mut self, byte: u8) {
        if let Some(cmd) = self.pending_kbd_command.take() {
            self.push(KBD_ACK, false);
            if cmd == KBD_CMD_SCANCODE_SET && byte == 0 {
                self.push(0x02, false);
            }
            return;
        }
        match byte {
            KBD_ECHO => self.push(KBD_ECHO, false),
            KBD_CMD_RESET => {
                self.push(KBD_ACK, false);
                self.push(KBD_BAT_OK, false);
            }
            KBD_CMD_GET_ID => {
                self.push(KBD_ACK, false);
                self.push(KBD_ID[0], false);
                self.push(KBD_ID[1], false);
            }
            // Commands followed by a parameter byte: set LEDs, scan code set, typematic.
            0xed | KBD_CMD_SCANCODE_SET | 0xf3 => {
                self.pending_kbd_command = Some(byte);
                self.push(KBD_ACK, false);
            }
            _ => self.push(KBD_ACK, false),
        }
    }
}

impl MutDevicePio for I8042 {
    fn pio_read(&mut self, base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        let value = match (port_of(base, offset), data.len()) {
            (Some(DATA_PORT), 1) => self.output.pop_front().map_or(0, |(b, _)| b),
            (Some(COMMAND_PORT), 1) => self.status(),
            _ => 0xff,
        };
        data.fill(value);
    }

    fn pio_write(&mut self, base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        match (port_of(base, offset), data) {
            (Some(DATA_PORT), [byte]) => self.data(*byte),
            (Some(COMMAND_PORT), [cmd]) => self.command(*cmd),
            _ => tracing::debug!(len = data.len(), "ignored i8042 write"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::Persist;

    fn device() -> (I8042, EventFd, EventFd) {
        let reset = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let dev = I8042::new(reset.try_clone().unwrap(), irq.try_clone().unwrap());
        (dev, reset, irq)
    }

    fn read(dev: &mut I8042, port: u16) -> u8 {
        let mut b = [0u8];
        dev.pio_read(PioAddress(port), 0, &mut b);
        b[0]
    }

    fn write(dev: &mut I8042, port: u16, value: u8) {
        dev.pio_write(PioAddress(port), 0, &[value]);
    }

    /// Linux's `__i8042_command`: write the command, then the parameters, then poll OBF.
    fn command(dev: &mut I8042, cmd: u8, params: &[u8], replies: usize) -> Vec<(u8, u8)> {
        write(dev, COMMAND_PORT, cmd);
        for p in params {
            write(dev, DATA_PORT, *p);
        }
        (0..replies)
            .map(|_| {
                let status = read(dev, COMMAND_PORT);
                assert_ne!(status & STATUS_OBF, 0, "reply to {cmd:#x} missing");
                (status, read(dev, DATA_PORT))
            })
            .collect()
    }

    #[test]
    fn reset_command_signals_the_reset_fd() {
        let (mut dev, reset, _irq) = device();
        write(&mut dev, COMMAND_PORT, CMD_RESET_CPU);
        assert_eq!(reset.read().unwrap(), 1);
    }

    #[test]
    fn linux_probe_sequence_gets_immediate_answers() {
        let (mut dev, _reset, _irq) = device();
        assert_eq!(
            read(&mut dev, COMMAND_PORT) & STATUS_OBF,
            0,
            "nothing to flush"
        );
        assert_eq!(command(&mut dev, CMD_SELF_TEST, &[], 1)[0].1, SELF_TEST_OK);
        let ctr = command(&mut dev, CMD_READ_CTR, &[], 1)[0].1;
        command(&mut dev, CMD_WRITE_CTR, &[ctr & !CTR_KBD_INT], 0);
        assert_eq!(
            command(&mut dev, CMD_READ_CTR, &[], 1)[0].1,
            ctr & !CTR_KBD_INT
        );
        // AUX loopback does not echo and the AUX test fails: Linux decides there is no mouse.
        let (status, byte) = command(&mut dev, CMD_WRITE_AUX_OUT, &[0x5a], 1)[0];
        assert_ne!(status & STATUS_AUXDATA, 0);
        assert_ne!(byte, 0x5a);
        assert_eq!(command(&mut dev, CMD_AUX_TEST, &[], 1)[0].1, AUX_TEST_FAIL);
        assert_eq!(command(&mut dev, CMD_KBD_TEST, &[], 1)[0].1, PORT_TEST_OK);
        assert_eq!(read(&mut dev, COMMAND_PORT) & STATUS_OBF, 0);
    }

    #[test]
    fn keyboard_commands_are_acknowledged_with_interrupt() {
        let (mut dev, _reset, irq) = device();
        write(&mut dev, DATA_PORT, KBD_CMD_GET_ID);
        assert!(irq.read().unwrap() >= 1);
        let bytes: Vec<u8> = (0..3).map(|_| read(&mut dev, DATA_PORT)).collect();
        assert_eq!(bytes, vec![KBD_ACK, KBD_ID[0], KBD_ID[1]]);
        write(&mut dev, DATA_PORT, 0xed); // set LEDs
        write(&mut dev, DATA_PORT, 0x07);
        assert_eq!(
            (read(&mut dev, DATA_PORT), read(&mut dev, DATA_PORT)),
            (KBD_ACK, KBD_ACK)
        );
    }

    #[test]
    fn output_queue_is_bounded_and_state_round_trips() {
        let (mut dev, reset, irq) = device();
        for _ in 0..100 {
            write(&mut dev, DATA_PORT, KBD_CMD_GET_ID);
        }
        let state = dev.save();
        assert_eq!(state.output.len(), OUTPUT_CAPACITY);
        let parts = I8042HostParts {
            reset_evt: reset,
            irq,
        };
        let mut restored = I8042::restore(parts, &state).unwrap();
        assert_eq!(restored.save(), state);
        assert_eq!(read(&mut restored, DATA_PORT), KBD_ACK);
    }

    #[test]
    fn odd_sized_accesses_are_harmless() {
        let (mut dev, reset, _irq) = device();
        dev.pio_write(PioAddress(COMMAND_PORT), 0, &[CMD_RESET_CPU, 0]);
        assert!(reset.read().is_err(), "no reset from a 2-byte write");
        let mut wide = [0u8; 4];
        dev.pio_read(PioAddress(DATA_PORT), 0, &mut wide);
        assert_eq!(wide, [0xff; 4]);
    }
}
