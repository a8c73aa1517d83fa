//! The virtio-net device as the transport sees it: features, config space, activation.

use std::sync::{Arc, Mutex};

use event_manager::SubscriberId;
use virtio_bindings::virtio_net::{VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP};

use super::backend::NetBackend;
use super::config::{NetBackendConfig, NetConfig};
use super::counters::{AtomicCounters, NetCounters};
use super::error::NetError;
use super::event_handler::NetEventHandler;
use super::handler::NetHandler;
use super::mac::MacAddr;
use super::switch::SwitchBackend;
use super::tap::TapBackend;
use super::{QUEUE_SIZE, RX_INDEX, TX_INDEX};
use crate::fault::NetFaults;
use crate::virtio::{
    add_to_event_loop, device_type, read_config_bytes, remove_from_event_loop, ActivateContext,
    ActivateError, EventLoopEndpoint, Subscriber, VirtioDevice, VIRTIO_F_VERSION_1,
};

/// Config space: `mac[6]`, `status: u16` (link up).
const CONFIG_LEN: usize = 8;

struct Active {
    id: SubscriberId,
    handler: Arc<Mutex<NetEventHandler>>,
}

/// A virtio-net device.
pub struct Net {
    mac: MacAddr,
    config: [u8; CONFIG_LEN],
    queue_sizes: [u16; 2],
    /// The backend while no handler owns it.
    backend: Option<Box<dyn NetBackend>>,
    endpoint: EventLoopEndpoint,
    fault: NetFaults,
    counters: Arc<AtomicCounters>,
    active: Option<Active>,
}

impl Net {
    /// Opens the configured backend and builds the device. `endpoint` is the event loop the
    /// handler will run on; `fault` sees every frame.
    pub fn new(
        config: NetConfig,
        endpoint: EventLoopEndpoint,
        fault: NetFaults,
    ) -> Result<Net, NetError> {
        let backend: Box<dyn NetBackend> = match &config.backend {
            NetBackendConfig::Switch { path, local } => {
                Box::new(SwitchBackend::new(path, local.as_deref())?)
            }
            NetBackendConfig::Tap { name } => Box::new(TapBackend::open(name)?),
        };
        Ok(Net::with_backend(backend, config.mac, endpoint, fault))
    }

    /// Builds the device over an already open backend (embedding, tests, custom backends).
    pub fn with_backend(
        backend: Box<dyn NetBackend>,
        mac: Option<MacAddr>,
        endpoint: EventLoopEndpoint,
        fault: NetFaults,
    ) -> Net {
        let mac = mac.unwrap_or_else(|| MacAddr::derived_from(&backend.describe()));
        let mut config = [0u8; CONFIG_LEN];
        config[..6].copy_from_slice(&mac.bytes());
        config[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        Net {
            mac,
            config,
            queue_sizes: [QUEUE_SIZE; 2],
            backend: Some(backend),
            endpoint,
            fault,
            counters: Arc::new(AtomicCounters::default()),
            active: None,
        }
    }

    /// The guest's MAC address.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// Current traffic counters.
    pub fn counters(&self) -> NetCounters {
        self.counters.snapshot()
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        device_type::NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | (1 << VIRTIO_NET_F_MAC) | (1 << VIRTIO_NET_F_STATUS)
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        if ctx.queues.len() != 2 || ctx.queue_evts.len() != 2 {
            return Err(ActivateError::QueueCount {
                expected: 2,
                got: ctx.queues.len().min(ctx.queue_evts.len()),
            });
        }
        if self.active.is_some() {
            self.reset();
        }
        let backend = self
            .backend
            .take()
            .ok_or_else(|| ActivateError::Backend("net backend was lost".into()))?;
        let mut queues = ctx.queues.into_iter();
        let mut evts = ctx.queue_evts.into_iter();
        let (Some(rx), Some(tx), Some(rx_evt), Some(tx_evt)) =
            (queues.next(), queues.next(), evts.next(), evts.next())
        else {
            return Err(ActivateError::QueueCount {
                expected: 2,
                got: 0,
            });
        };
        debug_assert_eq!((RX_INDEX, TX_INDEX), (0, 1));
        let handler = Arc::new(Mutex::new(NetEventHandler::new(NetHandler::new(
            ctx.mem,
            rx,
            tx,
            rx_evt,
            tx_evt,
            ctx.interrupt,
            backend,
            self.fault.clone(),
            self.counters.clone(),
        ))));
        let subscriber: Subscriber = handler.clone();
        match add_to_event_loop(&self.endpoint, subscriber) {
            Ok(id) => {
                self.active = Some(Active { id, handler });
                Ok(())
            }
            Err(e) => {
                self.backend = take_backend(handler);
                Err(e)
            }
        }
    }

    fn reset(&mut self) {
        let Some(active) = self.active.take() else {
            return;
        };
        let id = active.id;
        remove_from_event_loop(&self.endpoint, id, "net");
        self.backend = take_backend(active.handler);
        if self.backend.is_none() {
            tracing::error!("net: backend still in use after reset; the device cannot restart");
        }
    }

    fn live_queues(&self) -> Option<Vec<virtio_queue::QueueState>> {
        let active = self.active.as_ref()?;
        let h = active.handler.lock().unwrap_or_else(|e| e.into_inner());
        Some(vec![h.handler.rx.state(), h.handler.tx.state()])
    }
}

/// Recovers the backend from a handler no one else holds any more.
fn take_backend(handler: Arc<Mutex<NetEventHandler>>) -> Option<Box<dyn NetBackend>> {
    let mutex = Arc::try_unwrap(handler).ok()?;
    let inner = mutex.into_inner().unwrap_or_else(|e| e.into_inner());
    Some(inner.handler.into_backend())
}
