//! The vsock handler as an event-loop subscriber: queue notifications, the host listener,
//! every host stream (registered and unregistered as connections come and go), and a
//! once-a-second timer that expires host CONNECTs the guest never answered.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use vmm_sys_util::timerfd::TimerFd;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::handler::VsockHandler;
use super::muxer::{TAG_CONN, TAG_PENDING};
use super::{EVENT_INDEX, RX_INDEX, TX_INDEX};

const TAG_RXQ: u32 = RX_INDEX as u32;
const TAG_TXQ: u32 = TX_INDEX as u32;
const TAG_EVQ: u32 = EVENT_INDEX as u32;
const TAG_LISTENER: u32 = 3;
const TAG_TIMER: u32 = 6;

/// How often pending host CONNECTs are checked against [`super::CONNECT_TIMEOUT`].
const TIMER_TICK: Duration = Duration::from_secs(1);

/// Subscriber wrapper around [`VsockHandler`].
pub(crate) struct VsockEventHandler {
    pub(crate) handler: VsockHandler,
    /// Periodic; `None` when the timer could not be made (then nothing times out).
    timer: Option<TimerFd>,
}

impl VsockEventHandler {
    /// Wraps `handler`, with the expiry timer running.
    pub(crate) fn new(handler: VsockHandler) -> Self {
        let timer = TimerFd::new()
            .and_then(|mut t| t.reset(TIMER_TICK, Some(TIMER_TICK)).map(|()| t))
            .map_err(|e| tracing::error!("vsock: no connect timeout timer: {e}"))
            .ok();
        VsockEventHandler { handler, timer }
    }
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
        let timer = self.timer.as_ref().map(|t| (t.as_raw_fd(), TAG_TIMER));
        for (fd, tag) in sources.into_iter().chain(timer) {
            if let Err(e) = ops.add(Events::with_data_raw(fd, tag, EventSet::IN)) {
                tracing::error!("vsock: cannot poll source {tag}: {e}");
            }
        }
        if std::mem::take(&mut self.handler.send_reset) {
            self.handler.send_transport_reset();
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
            TAG_TIMER => {
                if let Some(t) = &mut self.timer {
                    let _ = t.wait();
                }
                h.muxer.expire_requests(Instant::now());
            }
            other => tracing::warn!("vsock: event for unknown source {other}"),
        }
        h.pump();
        h.muxer.sync_interest(ops);
    }
}
