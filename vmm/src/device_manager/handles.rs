//! Typed handles to the devices on the buses, kept for snapshots.

use std::sync::{Arc, Mutex, MutexGuard};

use devices::legacy::{AcpiPmDevice, Rtc, SerialDevice, I8042};
use devices::virtio::block::Block;
use devices::virtio::mmio::MmioTransport;
use devices::virtio::net::Net;
use devices::virtio::rng::Rng;
use devices::virtio::vsock::Vsock;

use crate::handle::DeviceInfo;

/// The legacy devices.
#[derive(Clone)]
pub struct LegacyHandles {
    pub serial: Arc<Mutex<SerialDevice>>,
    pub i8042: Arc<Mutex<I8042>>,
    pub rtc: Arc<Mutex<Rtc>>,
    pub acpi_pm: Arc<Mutex<AcpiPmDevice>>,
}

/// One virtio device behind its transport.
#[derive(Clone)]
pub enum VirtioHandle {
    Block(Arc<Mutex<MmioTransport<Block>>>),
    Net(Arc<Mutex<MmioTransport<Net>>>),
    Vsock(Arc<Mutex<MmioTransport<Vsock>>>),
    Rng(Arc<Mutex<MmioTransport<Rng>>>),
}

impl VirtioHandle {
    /// `block`, `net`, `vsock` or `rng`.
    pub fn kind(&self) -> &'static str {
        match self {
            VirtioHandle::Block(_) => "block",
            VirtioHandle::Net(_) => "net",
            VirtioHandle::Vsock(_) => "vsock",
            VirtioHandle::Rng(_) => "rng",
        }
    }
}

/// Every device of a built VM.
#[derive(Clone)]
pub struct DeviceHandles {
    pub legacy: LegacyHandles,
    pub virtio: Vec<(DeviceInfo, VirtioHandle)>,
}

/// Locks a device; a poisoned lock (a panic elsewhere) still gives the device.
pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
