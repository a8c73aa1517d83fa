//! Virtio plumbing shared by every device: the [`VirtioDevice`] trait that the virtio-mmio
//! transport drives, the interrupt a device raises, and what a device gets on activation.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use event_manager::{MutEventSubscriber, RemoteEndpoint};
use virtio_queue::{Queue, QueueState};
use vmm_sys_util::eventfd::EventFd;

use crate::GuestMemory;

pub mod block;
#[cfg(test)]
mod event_loop_tests;
pub mod mmio;
pub mod net;
pub mod queue_handler;
pub mod rng;
#[cfg(test)]
pub(crate) mod test_utils;
pub mod timer_queue;
pub mod vsock;

/// Device IDs from the virtio spec (5.x).
pub mod device_type {
    pub const NET: u32 = 1;
    pub const BLOCK: u32 = 2;
    pub const RNG: u32 = 4;
    pub const VSOCK: u32 = 19;
}

/// `VIRTIO_F_VERSION_1`: every Kiln device is modern-only.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Interrupt status bit: a used ring was updated.
pub const INT_VRING: u32 = 0x1;
/// Interrupt status bit: the configuration space changed.
pub const INT_CONFIG: u32 = 0x2;

/// A subscriber on the device event loop. Devices keep a clone to reach their handler.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// Lets a device (activated on a vCPU thread) add its handler to the event-loop thread.
pub type EventLoopEndpoint = RemoteEndpoint<Subscriber>;

/// The interrupt line of one virtio-mmio device: the `InterruptStatus` register plus the
/// irqfd that injects the GSI.
#[derive(Debug)]
pub struct VirtioInterrupt {
    status: AtomicU32,
    irqfd: EventFd,
}

impl VirtioInterrupt {
    /// Wraps an event fd that the VMM has registered as an irqfd (tests may read it directly).
    pub fn new(irqfd: EventFd) -> Self {
        VirtioInterrupt {
            status: AtomicU32::new(0),
            irqfd,
        }
    }

    /// Tells the guest that a used ring was updated.
    pub fn signal_used_queue(&self) {
        self.signal(INT_VRING);
    }

    /// Tells the guest that the config space changed.
    pub fn signal_config_change(&self) {
        self.signal(INT_CONFIG);
    }

    fn signal(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        if let Err(e) = self.irqfd.write(1) {
            tracing::warn!("failed to raise virtio interrupt: {e}");
        }
    }

    /// Current `InterruptStatus` register value.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// Restores the `InterruptStatus` register; any pending bit is raised again, since a
    /// repeated interrupt is harmless and a lost one can hang the driver.
    pub fn restore_status(&self, bits: u32) {
        self.status.store(0, Ordering::SeqCst);
        if bits != 0 {
            self.signal(bits);
        }
    }

    /// The guest wrote `InterruptACK`.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// The event fd behind the interrupt (to register as irqfd, or to observe in tests).
    pub fn eventfd(&self) -> &EventFd {
        &self.irqfd
    }
}

/// Everything a device needs when the driver sets `DRIVER_OK`.
pub struct ActivateContext {
    /// Guest memory (cheap to clone; regions are shared).
    pub mem: GuestMemory,
    /// The queues as the driver configured them, validated by the transport.
    pub queues: Vec<Queue>,
    /// One notification event fd per queue (registered as ioeventfd by the VMM).
    pub queue_evts: Vec<EventFd>,
    /// The device's interrupt.
    pub interrupt: Arc<VirtioInterrupt>,
    /// Feature bits the driver accepted.
    pub acked_features: u64,
}

/// Why a device could not be activated. The transport then sets `DEVICE_NEEDS_RESET`.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("wrong number of queues: expected {expected}, got {got}")]
    QueueCount { expected: usize, got: usize },
    #[error("device backend failed: {0}")]
    Backend(String),
    #[error("could not register with the event loop: {0}")]
    EventLoop(String),
}

/// A virtio device as the transport sees it. Device-specific I/O happens in a handler that
/// `activate` registers on the event loop; the transport never holds the handler's lock.
pub trait VirtioDevice: Send {
    /// Virtio device ID (see [`device_type`]).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits offered to the driver (must include [`VIRTIO_F_VERSION_1`]).
    fn features(&self) -> u64;
    /// Reads device config space at `offset`; out-of-range bytes read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes device config space; most devices ignore writes.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Starts the device: the driver is ready and the queues are valid.
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError>;
    /// Stops the device's handler and forgets the queues (driver wrote status 0).
    fn reset(&mut self);
    /// The queues as the running device has them now (ring positions included), in queue
    /// order; `None` while the device is not activated. Read for snapshots, with the event
    /// loop parked so no handler moves them meanwhile.
    fn live_queues(&self) -> Option<Vec<QueueState>>;
}

impl<T: VirtioDevice + ?Sized> VirtioDevice for Box<T> {
    fn device_type(&self) -> u32 {
        (**self).device_type()
    }
    fn queue_max_sizes(&self) -> &[u16] {
        (**self).queue_max_sizes()
    }
    fn features(&self) -> u64 {
        (**self).features()
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        (**self).read_config(offset, data)
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        (**self).write_config(offset, data)
    }
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        (**self).activate(ctx)
    }
    fn reset(&mut self) {
        (**self).reset()
    }
    fn live_queues(&self) -> Option<Vec<QueueState>> {
        (**self).live_queues()
    }
}

/// Adds a device handler to the running event loop (from a vCPU thread, during activation).
pub fn add_to_event_loop(
    endpoint: &EventLoopEndpoint,
    handler: Subscriber,
) -> Result<event_manager::SubscriberId, ActivateError> {
    endpoint
        .call_blocking(move |ops| Ok::<_, event_manager::Error>(ops.add_subscriber(handler)))
        .map_err(|e| ActivateError::EventLoop(format!("{e:?}")))
}

/// Takes a device handler off the event loop (on reset); failures are logged, since the
/// device is going away either way.
pub fn remove_from_event_loop(
    endpoint: &EventLoopEndpoint,
    id: event_manager::SubscriberId,
    device: &str,
) {
    if let Err(e) = endpoint.call_blocking(move |ops| ops.remove_subscriber(id).map(drop)) {
        tracing::warn!("{device}: cannot remove handler from the event loop: {e:?}");
    }
}

/// Copies the bytes of `config` at `offset` into `data`, zero-filling anything out of range.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start >= config.len() {
        return;
    }
    let n = data.len().min(config.len() - start);
    data[..n].copy_from_slice(&config[start..start + n]);
}
