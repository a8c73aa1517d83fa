//! Saving and restoring the virtio-mmio transport: registers, negotiated features, every
//! queue with its ring positions as the running device has them, and the interrupt status.
//! A restored transport whose device was running is activated again with those queues, so the
//! device carries on where it stopped.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_bindings::bindings::virtio_config::VIRTIO_CONFIG_S_DRIVER_OK;
use vmm_sys_util::eventfd::EventFd;

use super::{MmioError, MmioTransport, MmioTransportState, QueueConfig};
use crate::persist::Persist;
use crate::virtio::{VirtioDevice, VirtioInterrupt};
use crate::GuestMemory;

/// The transport's saved state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmioSavedState {
    /// Registers; queue positions are the live ones.
    pub registers: MmioTransportState,
    /// `InterruptStatus`.
    pub interrupt_status: u32,
}

/// What the host supplies to a restored transport: the device (itself restored), guest
/// memory, the interrupt and one notification event fd per queue.
pub struct MmioHostParts<D> {
    pub device: D,
    pub mem: GuestMemory,
    pub interrupt: Arc<VirtioInterrupt>,
    pub queue_evts: Vec<EventFd>,
}

impl<D: VirtioDevice> Persist for MmioTransport<D> {
    type State = MmioSavedState;
    type HostParts = MmioHostParts<D>;
    type Error = MmioError;

    fn save(&self) -> MmioSavedState {
        let mut registers = self.state.clone();
        if registers.activated {
            if let Some(live) = self.device.live_queues() {
                for (saved, now) in registers.queues.iter_mut().zip(live) {
                    *saved = QueueConfig::from(now);
                }
            }
        }
        MmioSavedState {
            registers,
            interrupt_status: self.interrupt.status(),
        }
    }

    fn restore(parts: MmioHostParts<D>, state: &MmioSavedState) -> Result<Self, MmioError> {
        let mut transport =
            MmioTransport::new(parts.device, parts.mem, parts.interrupt, parts.queue_evts)?;
        let regs = &state.registers;
        let max_sizes = transport.device.queue_max_sizes();
        if regs.queues.len() != max_sizes.len() {
            return Err(MmioError::Restore(format!(
                "{} saved queues, the device has {}",
                regs.queues.len(),
                max_sizes.len()
            )));
        }
        for (i, (q, max)) in regs.queues.iter().zip(max_sizes).enumerate() {
            if q.max_size != *max {
                return Err(MmioError::Restore(format!(
                    "queue {i} was saved with maximum size {}, the device offers {max}",
                    q.max_size
                )));
            }
        }
        let offered = transport.device.features();
        if regs.acked_features & !offered != 0 {
            return Err(MmioError::Restore(format!(
                "saved driver features {:#x} include some the device does not offer ({offered:#x})",
                regs.acked_features
            )));
        }
        transport.state = MmioTransportState {
            activated: false,
            status: regs.status & !VIRTIO_CONFIG_S_DRIVER_OK,
            ..regs.clone()
        };
        if regs.activated {
            transport
                .activate_device()
                .map_err(|why| MmioError::Restore(format!("the device cannot resume: {why}")))?;
        }
        transport.interrupt.restore_status(state.interrupt_status);
        Ok(transport)
    }
}
