//! The saved state of every device, gathered through the typed handles.

use devices::legacy::{I8042State, RtcState, SerialDeviceState};
use devices::persist::Persist;
use devices::virtio::block::BlockSavedState;
use devices::virtio::mmio::MmioSavedState;
use devices::virtio::net::NetState;
use devices::virtio::rng::RngState;
use devices::virtio::vsock::VsockState;
use serde::{Deserialize, Serialize};

use super::handles::{lock, DeviceHandles, VirtioHandle};

/// Every device's state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DevicesState {
    pub serial: SerialDeviceState,
    pub i8042: I8042State,
    pub rtc: RtcState,
    /// In the order they sit in the MMIO windows.
    pub virtio: Vec<VirtioDeviceState>,
}

/// One virtio device: where it sits, its transport, and the device itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VirtioDeviceState {
    pub mmio_base: u64,
    pub gsi: u32,
    pub transport: MmioSavedState,
    pub device: VirtioKindState,
}

/// The device-specific part.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum VirtioKindState {
    Block(BlockSavedState),
    Net(NetState),
    Vsock(VsockState),
    Rng(RngState),
}

impl VirtioKindState {
    /// `block`, `net`, `vsock` or `rng`.
    pub fn kind(&self) -> &'static str {
        match self {
            VirtioKindState::Block(_) => "block",
            VirtioKindState::Net(_) => "net",
            VirtioKindState::Vsock(_) => "vsock",
            VirtioKindState::Rng(_) => "rng",
        }
    }
}

impl DeviceHandles {
    /// Saves every device. The vCPUs must be paused and the device event loop parked.
    pub fn save(&self) -> DevicesState {
        let l = &self.legacy;
        DevicesState {
            serial: lock(&l.serial).save(),
            i8042: lock(&l.i8042).save(),
            rtc: lock(&l.rtc).save(),
            virtio: self
                .virtio
                .iter()
                .map(|(info, handle)| {
                    let (transport, device) = match handle {
                        VirtioHandle::Block(t) => {
                            let t = lock(t);
                            (t.save(), VirtioKindState::Block(t.device().save()))
                        }
                        VirtioHandle::Net(t) => {
                            let t = lock(t);
                            (t.save(), VirtioKindState::Net(t.device().save()))
                        }
                        VirtioHandle::Vsock(t) => {
                            let t = lock(t);
                            (t.save(), VirtioKindState::Vsock(t.device().save()))
                        }
                        VirtioHandle::Rng(t) => {
                            let t = lock(t);
                            (t.save(), VirtioKindState::Rng(t.device().save()))
                        }
                    };
                    VirtioDeviceState {
                        mmio_base: info.mmio_base,
                        gsi: info.gsi,
                        transport,
                        device,
                    }
                })
                .collect(),
        }
    }

    /// Writes every disk's write cache back to its image (before a snapshot: a restore from
    /// the image must find every write the guest was told is done). Fails after a power cut.
    pub fn write_back_disks(&self) -> Result<(), String> {
        let disks = self.virtio.iter().filter_map(|(_, h)| match h {
            VirtioHandle::Block(t) => Some(t),
            _ => None,
        });
        for (i, t) in disks.enumerate() {
            lock(t)
                .device()
                .write_back()
                .map_err(|e| format!("disk {i}: cannot write its cache back: {e}"))?;
        }
        Ok(())
    }

    /// Flushes buffered serial output (before the process goes away).
    pub fn flush_serial(&self) {
        let _ = lock(&self.legacy.serial).flush();
    }
}
