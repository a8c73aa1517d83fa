//! Places devices on the guest's buses: legacy PC devices on I/O ports, virtio devices in
//! 4 KiB virtio-mmio windows, each with an irqfd for its interrupt and an ioeventfd per queue.
//! It keeps a typed handle to every device, so a snapshot can save each one and a restore can
//! attach each one again from its saved state.

mod handles;
mod legacy;
mod persist;
mod virtio;

use std::sync::{Arc, Mutex};

use kvm_ioctls::VmFd;
use vm_device::bus::{MmioAddress, MmioRange, PioAddress, PioRange};
use vm_device::device_manager::{IoManager, MmioManager, PioManager};
use vm_device::{MutDeviceMmio, MutDevicePio};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub use handles::{DeviceHandles, LegacyHandles, VirtioHandle};
pub use legacy::LegacyParts;
pub use persist::{DevicesState, VirtioDeviceState, VirtioKindState};

use crate::handle::DeviceInfo;

/// Why a device could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("cannot create an event fd: {0}")]
    EventFd(std::io::Error),
    #[error("KVM refused to wire {what}: {err}")]
    Kvm {
        what: &'static str,
        err: kvm_ioctls::Error,
    },
    #[error("device bus conflict: {0:?}")]
    Bus(vm_device::bus::Error),
    #[error("too many virtio devices: at most {0}")]
    TooMany(u32),
    #[error("{0}")]
    Device(String),
}

pub(crate) fn eventfd() -> Result<EventFd, DeviceError> {
    EventFd::new(EFD_NONBLOCK).map_err(DeviceError::EventFd)
}

pub(crate) fn irqfd(vm: &VmFd, gsi: u32, what: &'static str) -> Result<EventFd, DeviceError> {
    let fd = eventfd()?;
    vm.register_irqfd(&fd, gsi)
        .map_err(|err| DeviceError::Kvm { what, err })?;
    Ok(fd)
}

/// The guest's I/O buses and what is on them.
pub struct DeviceManager {
    io: IoManager,
    legacy: Option<LegacyHandles>,
    virtio: Vec<(DeviceInfo, VirtioHandle)>,
    next_index: u32,
}

impl Default for DeviceManager {
    fn default() -> Self {
        Self::new()
    }
}

impl DeviceManager {
    /// An empty device manager.
    pub fn new() -> Self {
        DeviceManager {
            io: IoManager::new(),
            legacy: None,
            virtio: Vec::new(),
            next_index: 0,
        }
    }

    /// Puts a port-I/O device at `base..base+len`.
    pub fn add_pio<D: MutDevicePio + Send + 'static>(
        &mut self,
        base: u16,
        len: u16,
        dev: Arc<Mutex<D>>,
    ) -> Result<(), DeviceError> {
        let range = PioRange::new(PioAddress(base), len).map_err(DeviceError::Bus)?;
        self.io.register_pio(range, dev).map_err(DeviceError::Bus)
    }

    /// Puts an MMIO device at `base..base+len`.
    pub fn add_mmio<D: MutDeviceMmio + Send + 'static>(
        &mut self,
        base: u64,
        len: u64,
        dev: Arc<Mutex<D>>,
    ) -> Result<(), DeviceError> {
        let range = MmioRange::new(MmioAddress(base), len).map_err(DeviceError::Bus)?;
        self.io.register_mmio(range, dev).map_err(DeviceError::Bus)
    }

    /// `virtio_mmio.device=` parameters, for kernels built with command-line devices.
    pub fn cmdline_params(&self) -> Vec<String> {
        self.virtio
            .iter()
            .map(|(d, _)| format!("virtio_mmio.device=4K@{:#x}:{}", d.mmio_base, d.gsi))
            .collect()
    }

    /// The virtio devices placed so far.
    pub fn virtio_devices(&self) -> Vec<DeviceInfo> {
        self.virtio.iter().map(|(d, _)| d.clone()).collect()
    }

    /// Finishes building: the buses (shared by the vCPU threads) and the typed handles.
    pub fn finish(self) -> Result<(Arc<IoManager>, DeviceHandles), DeviceError> {
        let legacy = self
            .legacy
            .ok_or_else(|| DeviceError::Device("legacy devices were never added".into()))?;
        Ok((
            Arc::new(self.io),
            DeviceHandles {
                legacy,
                virtio: self.virtio,
            },
        ))
    }
}
