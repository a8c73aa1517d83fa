//! The net handler as an event-loop subscriber: queue notifications and backend readability.

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::handler::NetHandler;

const RX_QUEUE: u32 = 0;
const TX_QUEUE: u32 = 1;
const BACKEND: u32 = 2;
const HELD_FRAMES: u32 = 3;

/// [`NetHandler`] plus whether the backend fd is currently in the epoll set.
pub(crate) struct NetEventHandler {
    pub(crate) handler: NetHandler,
    backend_polled: bool,
}

impl NetEventHandler {
    pub(crate) fn new(handler: NetHandler) -> Self {
        NetEventHandler {
            handler,
            backend_polled: false,
        }
    }

    /// Polls the backend only while no frame is waiting for an rx buffer, so a guest that
    /// posts no buffers does not make the loop spin on a readable backend.
    fn sync_backend_interest(&mut self, ops: &mut EventOps) {
        let want = self.handler.wants_backend_events();
        if want == self.backend_polled {
            return;
        }
        let fd = self.handler.backend.as_raw_fd();
        let events = Events::with_data_raw(fd, BACKEND, EventSet::IN);
        let result = if want {
            ops.add(events)
        } else {
            ops.remove(events)
        };
        match result {
            Ok(()) => self.backend_polled = want,
            Err(e) => tracing::error!("net: cannot update backend polling: {e}"),
        }
    }
}

impl MutEventSubscriber for NetEventHandler {
    fn init(&mut self, ops: &mut EventOps) {
        for (fd, tag) in [
            (&self.handler.rx_evt, RX_QUEUE),
            (&self.handler.tx_evt, TX_QUEUE),
        ] {
            if let Err(e) = ops.add(Events::with_data(fd, tag, EventSet::IN)) {
                tracing::error!("net: cannot poll queue {tag}: {e}");
            }
        }
        if let Some(timer) = self.handler.held.timer() {
            if let Err(e) = ops.add(Events::with_data(timer, HELD_FRAMES, EventSet::IN)) {
                tracing::error!("net: cannot poll the held-frame timer: {e}");
            }
        }
        // Frames may have arrived before the driver was ready.
        self.handler.process_rx();
        self.sync_backend_interest(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            RX_QUEUE => {
                let _ = self.handler.rx_evt.read();
                self.handler.process_rx();
            }
            TX_QUEUE => {
                let _ = self.handler.tx_evt.read();
                self.handler.process_tx();
            }
            BACKEND => self.handler.process_rx(),
            HELD_FRAMES => {
                if self.handler.release_due() {
                    self.handler.process_rx();
                }
            }
            other => tracing::warn!("net: event for unknown source {other}"),
        }
        self.sync_backend_interest(ops);
    }
}
