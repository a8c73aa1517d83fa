//! The virtio-vsock device as the transport sees it: features, config space, activation.

use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex};

use event_manager::SubscriberId;

use super::config::{VsockConfig, VsockError};
use super::event_handler::VsockEventHandler;
use super::handler::VsockHandler;
use super::muxer::Muxer;
use super::{EVENT_INDEX, QUEUE_SIZE, RX_INDEX, TX_INDEX};
use crate::fault::VsockFaults;
use crate::virtio::{
    add_to_event_loop, device_type, read_config_bytes, remove_from_event_loop, ActivateContext,
    ActivateError, EventLoopEndpoint, Subscriber, VirtioDevice, VIRTIO_F_VERSION_1,
};

struct Active {
    id: SubscriberId,
    handler: Arc<Mutex<VsockEventHandler>>,
}

/// A virtio-vsock device with its host Unix socket.
pub struct Vsock {
    config: VsockConfig,
    config_space: [u8; 8],
    queue_sizes: [u16; 3],
    /// The host listener while no handler owns it.
    listener: Option<UnixListener>,
    endpoint: EventLoopEndpoint,
    faults: VsockFaults,
    active: Option<Active>,
    /// Restored from a snapshot: the next activation tells the guest its transport was reset
    /// (every connection it had is gone with the old host process).
    pub(super) reset_on_activate: bool,
}

impl Vsock {
    /// Validates the CID and starts listening on `config.uds_path` (which must not exist).
    /// The socket file is removed again when the device is dropped.
    pub fn new(config: VsockConfig, endpoint: EventLoopEndpoint) -> Result<Vsock, VsockError> {
        config.validate()?;
        if config.uds_path.symlink_metadata().is_ok() {
            return Err(VsockError::UdsExists(config.uds_path.clone()));
        }
        let listener = UnixListener::bind(&config.uds_path)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| VsockError::Bind {
                path: config.uds_path.clone(),
                source: e,
            })?;
        Ok(Vsock {
            config_space: config.cid.to_le_bytes(),
            config,
            queue_sizes: [QUEUE_SIZE; 3],
            listener: Some(listener),
            endpoint,
            faults: VsockFaults::none(),
            active: None,
            reset_on_activate: false,
        })
    }

    /// Applies `faults` (vsock reset rules) from the next activation on.
    pub fn set_faults(&mut self, faults: VsockFaults) {
        self.faults = faults;
    }

    /// The device configuration.
    pub fn config(&self) -> &VsockConfig {
        &self.config
    }

    /// Number of open connections (0 while the device is not active).
    pub fn connection_count(&self) -> usize {
        self.active.as_ref().map_or(0, |a| {
            a.handler
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .handler
                .muxer
                .connection_count()
        })
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        device_type::VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_space, offset, data);
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        if ctx.queues.len() != 3 || ctx.queue_evts.len() != 3 {
            return Err(ActivateError::QueueCount {
                expected: 3,
                got: ctx.queues.len().min(ctx.queue_evts.len()),
            });
        }
        if self.active.is_some() {
            self.reset();
        }
        let listener = self
            .listener
            .take()
            .ok_or_else(|| ActivateError::Backend("vsock listener was lost".into()))?;
        let mut queues = ctx.queues;
        // Indices are fixed by the spec: rx, tx, event.
        let event = queues.remove(EVENT_INDEX);
        let tx = queues.remove(TX_INDEX);
        let rx = queues.remove(RX_INDEX);
        let send_reset = std::mem::take(&mut self.reset_on_activate);
        let mut muxer = Muxer::new(self.config.cid, self.config.uds_path.clone(), listener);
        muxer.faults = self.faults.clone();
        let handler = Arc::new(Mutex::new(VsockEventHandler::new(VsockHandler {
            mem: ctx.mem,
            rx,
            tx,
            event,
            queue_evts: ctx.queue_evts,
            interrupt: ctx.interrupt,
            muxer,
            send_reset,
        })));
        let subscriber: Subscriber = handler.clone();
        match add_to_event_loop(&self.endpoint, subscriber) {
            Ok(id) => {
                self.active = Some(Active { id, handler });
                Ok(())
            }
            Err(e) => {
                self.listener = take_listener(handler);
                Err(e)
            }
        }
    }

    fn reset(&mut self) {
        let Some(active) = self.active.take() else {
            return;
        };
        let id = active.id;
        remove_from_event_loop(&self.endpoint, id, "vsock");
        // Dropping the handler closes every connection; the listener survives for the next
        // activation.
        self.listener = take_listener(active.handler);
        if self.listener.is_none() {
            tracing::error!("vsock: listener still in use after reset; the device cannot restart");
        }
    }

    fn live_queues(&self) -> Option<Vec<virtio_queue::QueueState>> {
        let active = self.active.as_ref()?;
        let h = active.handler.lock().unwrap_or_else(|e| e.into_inner());
        let h = &h.handler;
        Some(vec![h.rx.state(), h.tx.state(), h.event.state()])
    }
}

impl Drop for Vsock {
    /// Removes the socket file. The handler is not stopped here (that would need a blocking
    /// call into the event loop, which may already be gone); it closes with the event loop.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config.uds_path);
    }
}

fn take_listener(handler: Arc<Mutex<VsockEventHandler>>) -> Option<UnixListener> {
    let mutex = Arc::try_unwrap(handler).ok()?;
    let inner = mutex.into_inner().unwrap_or_else(|e| e.into_inner());
    Some(inner.handler.muxer.into_listener())
}
