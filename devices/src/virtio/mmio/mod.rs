//! The virtio-mmio transport, modern (version 2) register layout only (virtio 1.2, 4.2.2).
//!
//! Every register access comes from the guest: unknown offsets, odd sizes and writes in the
//! wrong device state are ignored (logged at debug level), never a panic.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_bindings::bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueState, QueueT};
use vm_device::bus::{MmioAddress, MmioAddressOffset};
use vm_device::MutDeviceMmio;
use vmm_sys_util::eventfd::EventFd;

use crate::virtio::{ActivateContext, VirtioDevice, VirtioInterrupt, VIRTIO_F_VERSION_1};
use crate::GuestMemory;

mod persist;
pub use persist::{MmioHostParts, MmioSavedState};

/// "virt" in little endian.
pub const MAGIC_VALUE: u32 = 0x7472_6976;
/// Modern virtio-mmio.
pub const MMIO_VERSION: u32 = 2;
/// Vendor ID reported to the guest: Kiln has no registered one, and Linux ignores it.
pub const VENDOR_ID: u32 = 0;
/// Offset of `QueueNotify`, where the VMM registers the queue ioeventfds.
pub const QUEUE_NOTIFY_OFFSET: u64 = 0x50;
/// Offset where device config space starts.
pub const CONFIG_SPACE_OFFSET: u64 = 0x100;
/// Size of the MMIO window of one device.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;

mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
}

/// Serde mirror of [`virtio_queue::QueueState`]: one queue as the driver configured it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueConfig {
    /// Largest size the device accepts.
    pub max_size: u16,
    /// Size the driver chose (unchecked until `DRIVER_OK`).
    pub size: u16,
    /// `QueueReady`.
    pub ready: bool,
    /// Descriptor table address.
    pub desc_table: u64,
    /// Available (driver) ring address.
    pub avail_ring: u64,
    /// Used (device) ring address.
    pub used_ring: u64,
    /// Next available index the device will read.
    pub next_avail: u16,
    /// Next used index the device will write.
    pub next_used: u16,
    /// `VIRTIO_RING_F_EVENT_IDX` negotiated.
    pub event_idx_enabled: bool,
}

impl QueueConfig {
    fn new(max_size: u16) -> Self {
        QueueConfig {
            max_size,
            size: max_size,
            ..Default::default()
        }
    }
}

impl From<QueueConfig> for QueueState {
    fn from(q: QueueConfig) -> Self {
        QueueState {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

impl From<QueueState> for QueueConfig {
    fn from(q: QueueState) -> Self {
        QueueConfig {
            max_size: q.max_size,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
        }
    }
}

/// The transport's registers as plain data (for snapshots).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmioTransportState {
    /// `Status` register.
    pub status: u32,
    /// `DeviceFeaturesSel`.
    pub device_features_sel: u32,
    /// `DriverFeaturesSel`.
    pub driver_features_sel: u32,
    /// Features written by the driver (checked when it sets `FEATURES_OK`).
    pub acked_features: u64,
    /// `QueueSel`.
    pub queue_sel: u32,
    /// `ConfigGeneration`.
    pub config_generation: u32,
    /// The device was activated (driver set `DRIVER_OK` and activation succeeded).
    pub activated: bool,
    /// Per-queue configuration.
    pub queues: Vec<QueueConfig>,
}

/// A virtio device behind the virtio-mmio register interface. `D` is the device's type, so
/// the VMM keeps typed handles (`MmioTransport<Block>`) for snapshots; tests and fuzzers may
/// use the boxed default.
pub struct MmioTransport<D: VirtioDevice = Box<dyn VirtioDevice>> {
    device: D,
    mem: GuestMemory,
    interrupt: Arc<VirtioInterrupt>,
    queue_evts: Vec<EventFd>,
    state: MmioTransportState,
}

/// Why a transport could not be built (a VMM bug, not a guest problem).
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    #[error("device has {queues} queues but {evts} notification event fds were given")]
    QueueEvtCount { queues: usize, evts: usize },
    #[error("device queue {index} has invalid maximum size {max}")]
    BadMaxSize { index: usize, max: u16 },
    #[error("device does not offer VIRTIO_F_VERSION_1")]
    NotModern,
    #[error("saved virtio-mmio state does not fit the device: {0}")]
    Restore(String),
}

impl<D: VirtioDevice> MmioTransport<D> {
    /// Wraps `device`. `queue_evts` has one event fd per device queue; the VMM registers
    /// each as an ioeventfd at `base + 0x50` with the queue index as datamatch.
    pub fn new(
        device: D,
        mem: GuestMemory,
        interrupt: Arc<VirtioInterrupt>,
        queue_evts: Vec<EventFd>,
    ) -> Result<Self, MmioError> {
        let max_sizes = device.queue_max_sizes();
        if max_sizes.len() != queue_evts.len() {
            return Err(MmioError::QueueEvtCount {
                queues: max_sizes.len(),
                evts: queue_evts.len(),
            });
        }
        if device.features() & VIRTIO_F_VERSION_1 == 0 {
            return Err(MmioError::NotModern);
        }
        for (index, &max) in max_sizes.iter().enumerate() {
            if Queue::new(max).is_err() {
                return Err(MmioError::BadMaxSize { index, max });
            }
        }
        let queues = max_sizes.iter().copied().map(QueueConfig::new).collect();
        Ok(MmioTransport {
            device,
            mem,
            interrupt,
            queue_evts,
            state: MmioTransportState {
                queues,
                ..Default::default()
            },
        })
    }

    /// The registers as plain data. Queue ring positions (`next_avail`/`next_used`) are the
    /// ones at activation: once active, the device owns the live queues.
    pub fn state(&self) -> &MmioTransportState {
        &self.state
    }

    /// The wrapped device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The wrapped device, mutably.
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// The device's interrupt.
    pub fn interrupt(&self) -> &Arc<VirtioInterrupt> {
        &self.interrupt
    }

    /// The notification event fds, in queue order (for ioeventfd registration).
    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn selected_queue(&mut self) -> Option<&mut QueueConfig> {
        self.state.queues.get_mut(self.state.queue_sel as usize)
    }

    fn has_status(&self, bit: u32) -> bool {
        self.state.status & bit != 0
    }

    fn read_register(&self, offset: u64) -> Option<u32> {
        let s = &self.state;
        let value = match offset {
            reg::MAGIC => MAGIC_VALUE,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match s.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => s
                .queues
                .get(s.queue_sel as usize)
                .map_or(0, |q| u32::from(q.max_size)),
            reg::QUEUE_READY => s
                .queues
                .get(s.queue_sel as usize)
                .map_or(0, |q| u32::from(q.ready)),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => s.status,
            reg::CONFIG_GENERATION => s.config_generation,
            _ => return None,
        };
        Some(value)
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            reg::DEVICE_FEATURES_SEL => self.state.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => self.state.driver_features_sel = value,
            reg::DRIVER_FEATURES => self.write_driver_features(value),
            reg::QUEUE_SEL => self.state.queue_sel = value,
            reg::QUEUE_NOTIFY => self.notify_queue(value),
            reg::INTERRUPT_ACK => self.interrupt.ack(value),
            reg::STATUS => self.write_status(value),
            reg::QUEUE_NUM
            | reg::QUEUE_READY
            | reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH => self.write_queue_register(offset, value),
            _ => tracing::debug!("virtio-mmio: write to unknown register {offset:#x} ignored"),
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        if !self.has_status(VIRTIO_CONFIG_S_DRIVER) || self.has_status(VIRTIO_CONFIG_S_FEATURES_OK)
        {
            tracing::debug!("virtio-mmio: DriverFeatures written outside negotiation, ignored");
            return;
        }
        let acked = &mut self.state.acked_features;
        match self.state.driver_features_sel {
            0 => *acked = (*acked & !0xffff_ffff) | u64::from(value),
            1 => *acked = (*acked & 0xffff_ffff) | (u64::from(value) << 32),
            sel => {
                tracing::debug!("virtio-mmio: DriverFeatures with select {sel} ignored");
            }
        }
    }

    fn write_queue_register(&mut self, offset: u64, value: u32) {
        if !self.has_status(VIRTIO_CONFIG_S_FEATURES_OK)
            || self.has_status(VIRTIO_CONFIG_S_DRIVER_OK)
        {
            tracing::debug!("virtio-mmio: queue register {offset:#x} written in wrong state");
            return;
        }
        let Some(q) = self.selected_queue() else {
            tracing::debug!("virtio-mmio: queue register written with no such queue selected");
            return;
        };
        let low = |old: u64| (old & !0xffff_ffff) | u64::from(value);
        let high = |old: u64| (old & 0xffff_ffff) | (u64::from(value) << 32);
        match offset {
            // Truncation is checked at DRIVER_OK: an out-of-range size fails validation.
            reg::QUEUE_NUM => q.size = u16::try_from(value).unwrap_or(0),
            reg::QUEUE_READY => q.ready = value == 1,
            reg::QUEUE_DESC_LOW => q.desc_table = low(q.desc_table),
            reg::QUEUE_DESC_HIGH => q.desc_table = high(q.desc_table),
            reg::QUEUE_DRIVER_LOW => q.avail_ring = low(q.avail_ring),
            reg::QUEUE_DRIVER_HIGH => q.avail_ring = high(q.avail_ring),
            reg::QUEUE_DEVICE_LOW => q.used_ring = low(q.used_ring),
            reg::QUEUE_DEVICE_HIGH => q.used_ring = high(q.used_ring),
            _ => {}
        }
    }

    fn notify_queue(&mut self, index: u32) {
        // Only reached when no ioeventfd caught the write (tests, or a VMM without them).
        match self.queue_evts.get(index as usize) {
            Some(evt) => {
                if let Err(e) = evt.write(1) {
                    tracing::warn!("virtio-mmio: cannot signal queue {index}: {e}");
                }
            }
            None => tracing::debug!("virtio-mmio: notify for nonexistent queue {index}"),
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.state.status;
        // The driver only ever adds bits; the device owns NEEDS_RESET.
        let value = value & !VIRTIO_CONFIG_S_NEEDS_RESET;
        if value & old != old & !VIRTIO_CONFIG_S_NEEDS_RESET {
            tracing::debug!("virtio-mmio: status {value:#x} clears bits of {old:#x}, ignored");
            return;
        }
        let added = value & !old;
        let mut new = old | (added & (VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER));
        if added & VIRTIO_CONFIG_S_FAILED != 0 {
            new |= VIRTIO_CONFIG_S_FAILED;
        }
        self.state.status = new;
        if added & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            if self.features_acceptable() {
                self.state.status |= VIRTIO_CONFIG_S_FEATURES_OK;
            } else {
                tracing::debug!(
                    "virtio-mmio: driver features {:#x} refused (offered {:#x})",
                    self.state.acked_features,
                    self.device.features()
                );
            }
        }
        if added & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            self.driver_ok();
        }
    }

    fn features_acceptable(&self) -> bool {
        let acked = self.state.acked_features;
        self.has_status(VIRTIO_CONFIG_S_DRIVER)
            && acked & !self.device.features() == 0
            && acked & VIRTIO_F_VERSION_1 != 0
    }

    fn driver_ok(&mut self) {
        if !self.has_status(VIRTIO_CONFIG_S_FEATURES_OK) {
            self.fail_activation("DRIVER_OK without FEATURES_OK");
            return;
        }
        if let Err(why) = self.activate_device() {
            self.fail_activation(&why);
        }
    }

    /// Hands the configured queues to the device; on success the device runs and the status
    /// says DRIVER_OK.
    fn activate_device(&mut self) -> Result<(), String> {
        let event_idx = self.state.acked_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        let mut queues = Vec::with_capacity(self.state.queues.len());
        for (index, config) in self.state.queues.iter_mut().enumerate() {
            config.event_idx_enabled = event_idx;
            let q = validated_queue(*config, &self.mem)
                .map_err(|why| format!("queue {index}: {why}"))?;
            queues.push(q);
        }
        let mut queue_evts = Vec::with_capacity(self.queue_evts.len());
        for evt in &self.queue_evts {
            let e = evt
                .try_clone()
                .map_err(|e| format!("cannot duplicate queue event fd: {e}"))?;
            queue_evts.push(e);
        }
        let ctx = ActivateContext {
            mem: self.mem.clone(),
            queues,
            queue_evts,
            interrupt: self.interrupt.clone(),
            acked_features: self.state.acked_features,
        };
        self.device.activate(ctx).map_err(|e| e.to_string())?;
        self.state.status |= VIRTIO_CONFIG_S_DRIVER_OK;
        self.state.activated = true;
        Ok(())
    }

    fn fail_activation(&mut self, why: &str) {
        tracing::warn!("virtio-mmio: device activation failed: {why}");
        self.state.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
        self.interrupt.signal_config_change();
    }

    fn reset(&mut self) {
        if self.state.activated {
            self.device.reset();
        }
        let queues = self
            .state
            .queues
            .iter()
            .map(|q| QueueConfig::new(q.max_size))
            .collect();
        self.state = MmioTransportState {
            queues,
            config_generation: self.state.config_generation,
            ..Default::default()
        };
        self.interrupt.ack(u32::MAX);
    }
}

/// Builds a queue from the driver's configuration and checks it against guest memory.
fn validated_queue(config: QueueConfig, mem: &GuestMemory) -> Result<Queue, String> {
    if !config.ready {
        // Devices decide whether they can live without this queue.
        return Queue::new(config.max_size).map_err(|e| e.to_string());
    }
    if config.size == 0 || !config.size.is_power_of_two() || config.size > config.max_size {
        return Err(format!(
            "size {} is not a power of two up to {}",
            config.size, config.max_size
        ));
    }
    let queue = Queue::try_from(QueueState::from(config)).map_err(|e| e.to_string())?;
    if !queue.is_valid(mem) {
        return Err("rings are misaligned or outside guest memory".into());
    }
    Ok(queue)
}

impl<D: VirtioDevice> MutDeviceMmio for MmioTransport<D> {
    fn mmio_read(&mut self, _base: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            self.device.read_config(offset - CONFIG_SPACE_OFFSET, data);
            return;
        }
        let value = if data.len() == 4 && offset.is_multiple_of(4) {
            self.read_register(offset)
        } else {
            None
        };
        match value {
            Some(v) => data.copy_from_slice(&v.to_le_bytes()),
            None => {
                tracing::debug!(
                    "virtio-mmio: read of {} bytes at {offset:#x} ignored",
                    data.len()
                );
                data.fill(0);
            }
        }
    }

    fn mmio_write(&mut self, _base: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            self.device.write_config(offset - CONFIG_SPACE_OFFSET, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            tracing::debug!(
                "virtio-mmio: write of {} bytes at {offset:#x} ignored",
                data.len()
            );
            return;
        };
        if !offset.is_multiple_of(4) {
            tracing::debug!("virtio-mmio: unaligned write at {offset:#x} ignored");
            return;
        }
        self.write_register(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
mod tests;
