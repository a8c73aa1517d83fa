//! Saving and restoring the i8042: its configuration byte, output port, half-finished
//! commands and the bytes queued for the guest.

use serde::{Deserialize, Serialize};
use vmm_sys_util::eventfd::EventFd;

use super::{CTR_AUX_DISABLE, CTR_KBD_INT, CTR_SYS, CTR_XLATE, I8042};
use crate::persist::Persist;

/// Saved controller state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct I8042State {
    /// Controller configuration byte.
    pub ctr: u8,
    /// Output port.
    pub outport: u8,
    /// A command waiting for its data byte on port 0x60.
    pub pending_command: Option<u8>,
    /// A keyboard command waiting for its parameter.
    pub pending_kbd_command: Option<u8>,
    /// Bytes queued for the guest, with whether each came from the AUX port.
    pub output: Vec<(u8, bool)>,
}

impl Default for I8042State {
    fn default() -> Self {
        I8042State {
            ctr: CTR_KBD_INT | CTR_SYS | CTR_AUX_DISABLE | CTR_XLATE,
            outport: 0x03,
            pending_command: None,
            pending_kbd_command: None,
            output: Vec::new(),
        }
    }
}

/// What the host supplies to a restored controller.
pub struct I8042HostParts {
    /// Written when the guest resets the CPU through the controller.
    pub reset_evt: EventFd,
    /// The irqfd of GSI 1.
    pub irq: EventFd,
}

impl Persist for I8042 {
    type State = I8042State;
    type HostParts = I8042HostParts;
    type Error = std::convert::Infallible;

    fn save(&self) -> I8042State {
        I8042State {
            ctr: self.ctr,
            outport: self.outport,
            pending_command: self.pending_command,
            pending_kbd_command: self.pending_kbd_command,
            output: self.output.iter().copied().collect(),
        }
    }

    fn restore(parts: I8042HostParts, state: &I8042State) -> Result<Self, Self::Error> {
        Ok(I8042::from_saved(state, parts.reset_evt, parts.irq))
    }
}
