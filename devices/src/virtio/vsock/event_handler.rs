//! The vsock handler as an event-loop subscriber: queue notifications, the host listener,
//! and every host stream, registered and unregistered as connections come and go.

use std::os::fd::AsRawFd;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::handler::VsockHandler;
use super::muxer::{TAG_CONN, TAG_PENDING};
use super::{EVENT_INDEX, RX_INDEX, TX_INDEX};

const TAG_RXQ: u32 = RX_INDEX as u32;
const TAG_TXQ: u32 = TX_INDEX as u32;
const TAG_EVQ: u32 = EVENT_INDEX as u32;
const TAG_LISTENER: u32 = 3;

/// Subscriber wrapper around [`VsockHandler`].
pub(crate) struct VsockEventHandler {
    pub(crate) handler: VsockHandler,
}

impl MutEventSubscriber for VsockEventHandler {
    fn init(&mut self, ops: &mut EventOps) {
        let h = &self.handler;
        let sources = [
            (h.queue_evts[RX_INDEX].as_raw_fd(), TAG_RXQ),
            (h.queue_evts[TX_INDEX].as_raw_fd(), TAG_TXQ),
            (h.queue_evts[EVENT_INDEX].as_raw_fd(), TAG_EVQ),
            (h.muxer.listener().as_raw_fd(), TAG_LISTENER),
        ];
        for (fd, tag) in sources {
            if let Err(e) = ops.add(Events::with_data_raw(fd, tag, EventSet::IN)) {
                tracing::error!("vsock: cannot poll source {tag}: {e}");
            }
        }
        // The driver may have queued packets before we were registered.
        self.handler.pump();
        self.handler.muxer.sync_interest(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let h = &mut self.handler;
        match events.data() {
            tag @ (TAG_RXQ | TAG_TXQ | TAG_EVQ) => {
                let _ = h.queue_evts[tag as usize].read();
            }
            TAG_LISTENER => h.muxer.on_listener_ready(),
            TAG_PENDING => h.muxer.on_pending_ready(events.fd()),
            TAG_CONN => h.muxer.on_conn_event(events.fd(), events.event_set()),
            other => tracing::warn!("vsock: event for unknown source {other}"),
        }
        h.pump();
        h.muxer.sync_interest(ops);
    }
}
