//! Moves packets between the virtio queues and the muxer. Runs on the event-loop thread.

use std::io::Write;
use std::sync::Arc;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::muxer::Muxer;
use super::packet::{read_tx_packet, HDR_LEN};
use super::MAX_PKT_DATA;
use crate::virtio::VirtioInterrupt;
use crate::GuestMemory;

/// The vsock device's queues and connections while the driver is running.
pub(crate) struct VsockHandler {
    pub(crate) mem: GuestMemory,
    pub(crate) rx: Queue,
    pub(crate) tx: Queue,
    /// The event queue: its only event is the transport reset sent after a restore.
    pub(crate) event: Queue,
    pub(crate) queue_evts: Vec<EventFd>,
    pub(crate) interrupt: Arc<VirtioInterrupt>,
    pub(crate) muxer: Muxer,
    /// Send `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET` once the handler runs (after a restore).
    pub(crate) send_reset: bool,
}

/// `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET` (virtio 1.2, 5.10.6.7).
pub(crate) const EVENT_TRANSPORT_RESET: u32 = 0;

impl VsockHandler {
    /// Tells the guest its transport was reset: the driver then drops every connection and
    /// re-reads the CID. Needs an event buffer from the guest; without one the event is lost
    /// (logged), which leaves the guest's stale connections to time out.
    pub(crate) fn send_transport_reset(&mut self) {
        let mem = self.mem.clone();
        let Some(chain) = self.event.pop_descriptor_chain(&mem) else {
            tracing::warn!("vsock: the guest posted no event buffer; transport reset not sent");
            return;
        };
        let head = chain.head_index();
        let event = EVENT_TRANSPORT_RESET.to_le_bytes();
        let written = match chain.writer(&mem) {
            Ok(mut w) if w.available_bytes() >= event.len() => match w.write_all(&event) {
                Ok(()) => event.len() as u32,
                Err(e) => {
                    tracing::warn!("vsock: cannot write the transport reset event: {e}");
                    0
                }
            },
            _ => {
                tracing::warn!("vsock: event buffer {head} unusable; transport reset not sent");
                0
            }
        };
        if let Err(e) = self.event.add_used(&mem, head, written) {
            tracing::warn!("vsock: cannot return event chain {head}: {e}");
        }
        signal_if_needed(&mut self.event, &mem, &self.interrupt);
    }

    /// Processes both queues until neither can make progress.
    pub(crate) fn pump(&mut self) {
        let mut rx_used = false;
        let mut tx_used = false;
        loop {
            let (used, stalled) = self.process_tx();
            tx_used |= used;
            rx_used |= self.process_rx();
            // Resume tx only if it stopped for a backlog that the guest has since drained.
            if !stalled || self.muxer.rx_backlog_full() {
                break;
            }
        }
        if rx_used {
            signal_if_needed(&mut self.rx, &self.mem, &self.interrupt);
        }
        if tx_used {
            signal_if_needed(&mut self.tx, &self.mem, &self.interrupt);
        }
    }

    /// Returns (any chain used, stopped because the rx backlog is full).
    fn process_tx(&mut self) -> (bool, bool) {
        let mem = self.mem.clone();
        let mut used = false;
        loop {
            if self.muxer.rx_backlog_full() {
                return (used, true);
            }
            let Some(chain) = self.tx.pop_descriptor_chain(&mem) else {
                return (used, false);
            };
            let head = chain.head_index();
            match read_tx_packet(&mem, chain) {
                Ok((hdr, data)) => self.muxer.on_guest_packet(&hdr, &data),
                Err(e) => {
                    tracing::debug!("vsock tx: bad packet in chain {head}: {e}");
                    if let Some(hdr) = e.header() {
                        self.muxer.reject(hdr);
                    }
                }
            }
            if let Err(e) = self.tx.add_used(&mem, head, 0) {
                tracing::warn!("vsock tx: cannot return chain {head}: {e}");
            }
            used = true;
        }
    }

    /// Fills rx buffers with whatever the muxer has; returns whether any chain was used.
    fn process_rx(&mut self) -> bool {
        let mem = self.mem.clone();
        let mut used = false;
        while self.muxer.has_rx() {
            let Some(chain) = self.rx.pop_descriptor_chain(&mem) else {
                break;
            };
            let head = chain.head_index();
            let writable_only = chain.clone().all(|d| d.is_write_only());
            let writer = chain.writer(&mem);
            let mut writer = match writer {
                Ok(w) if writable_only && w.available_bytes() >= HDR_LEN => w,
                _ => {
                    tracing::debug!("vsock rx: unusable chain {head}, returning it empty");
                    if let Err(e) = self.rx.add_used(&mem, head, 0) {
                        tracing::warn!("vsock rx: cannot return chain {head}: {e}");
                    }
                    used = true;
                    continue;
                }
            };
            let max_data = (writer.available_bytes() - HDR_LEN).min(MAX_PKT_DATA);
            let Some((hdr, data)) = self.muxer.next_rx_packet(max_data) else {
                // Nothing fits this buffer now; leave it to the guest for later.
                self.rx.go_to_previous_position();
                break;
            };
            let len = HDR_LEN + data.len();
            if let Err(e) = writer
                .write_all(&hdr.to_bytes())
                .and_then(|()| writer.write_all(&data))
            {
                tracing::warn!("vsock rx: writing packet into chain {head} failed: {e}");
            }
            // len <= HDR_LEN + MAX_PKT_DATA.
            if let Err(e) = self.rx.add_used(&mem, head, len as u32) {
                tracing::warn!("vsock rx: cannot return chain {head}: {e}");
            }
            used = true;
        }
        used
    }
}

fn signal_if_needed(queue: &mut Queue, mem: &GuestMemory, interrupt: &VirtioInterrupt) {
    match queue.needs_notification(mem) {
        Ok(false) => {}
        // A spurious interrupt is harmless; a missing one can hang the driver.
        Ok(true) | Err(_) => interrupt.signal_used_queue(),
    }
}
