//! Moves frames between the virtio queues and the backend. Runs on the event-loop thread.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::backend::NetBackend;
use super::counters::AtomicCounters;
use super::held_frames::HeldFrames;
use super::log_limit::RateLimitedLog;
use super::{MAX_FRAME_LEN, NET_HDR_LEN};
use crate::fault::{NetDirection, NetFault, NetFaults};
use crate::virtio::VirtioInterrupt;
use crate::GuestMemory;

type Chain<'a> = DescriptorChain<&'a GuestMemory>;

/// Why a descriptor chain could not carry a frame.
#[derive(Debug, thiserror::Error)]
enum ChainError {
    #[error("descriptor in the wrong direction")]
    WrongDirection,
    #[error("chain of {0} bytes is shorter than the virtio-net header")]
    NoHeader(usize),
    #[error("frame of {0} bytes exceeds {MAX_FRAME_LEN}")]
    TooBig(usize),
    #[error("rx buffer of {avail} bytes cannot hold {needed}")]
    TooSmall { avail: usize, needed: usize },
    #[error("bad guest memory in chain: {0}")]
    Memory(String),
}

/// The net device's queues and backend while the driver is running.
pub(crate) struct NetHandler {
    pub(crate) mem: GuestMemory,
    pub(crate) rx: Queue,
    pub(crate) tx: Queue,
    pub(crate) rx_evt: EventFd,
    pub(crate) tx_evt: EventFd,
    pub(crate) interrupt: Arc<VirtioInterrupt>,
    pub(crate) backend: Box<dyn NetBackend>,
    pub(crate) fault: NetFaults,
    pub(crate) counters: Arc<AtomicCounters>,
    /// Frames held back by delay and reorder faults.
    pub(crate) held: HeldFrames,
    /// Frames for the guest that a fault released (delayed, reordered, duplicated); they go
    /// before the backend's next frame.
    ready_rx: VecDeque<Vec<u8>>,
    /// Frames seen so far per direction (the fault rules' frame numbers).
    tx_seen: u64,
    rx_seen: u64,
    /// One frame read from the backend, waiting for an rx buffer (`rx_len` bytes of it).
    rx_buf: Vec<u8>,
    rx_len: Option<usize>,
    /// The backend failed to receive with a hard error; polling it again would spin.
    rx_broken: bool,
    backend_log: RateLimitedLog,
}

impl NetHandler {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        mem: GuestMemory,
        rx: Queue,
        tx: Queue,
        rx_evt: EventFd,
        tx_evt: EventFd,
        interrupt: Arc<VirtioInterrupt>,
        backend: Box<dyn NetBackend>,
        fault: NetFaults,
        counters: Arc<AtomicCounters>,
    ) -> Self {
        NetHandler {
            mem,
            rx,
            tx,
            rx_evt,
            tx_evt,
            interrupt,
            backend,
            fault,
            counters,
            held: HeldFrames::new(),
            ready_rx: VecDeque::new(),
            tx_seen: 0,
            rx_seen: 0,
            // One extra byte so an oversized datagram is recognisable.
            rx_buf: vec![0; MAX_FRAME_LEN + 1],
            rx_len: None,
            rx_broken: false,
            backend_log: RateLimitedLog::new(Duration::from_secs(1)),
        }
    }

    /// True while a frame waits for an rx buffer.
    pub(crate) fn holding_rx_frame(&self) -> bool {
        self.rx_len.is_some()
    }

    /// Whether the backend fd should be polled: not while a frame waits for a buffer (the
    /// guest posting buffers resumes us) and not after the backend broke.
    pub(crate) fn wants_backend_events(&self) -> bool {
        !self.holding_rx_frame() && !self.rx_broken
    }

    /// Sends every frame the guest has queued for transmission.
    pub(crate) fn process_tx(&mut self) {
        let mem = self.mem.clone();
        let mut used_any = false;
        while let Some(chain) = self.tx.pop_descriptor_chain(&mem) {
            let head = chain.head_index();
            match read_tx_frame(&mem, chain) {
                Ok(frame) => self.send_frame(&frame),
                Err(e) => {
                    tracing::debug!("net tx: dropping chain {head}: {e}");
                    AtomicCounters::add(&self.counters.tx_drops, 1);
                }
            }
            if let Err(e) = self.tx.add_used(&mem, head, 0) {
                tracing::warn!("net tx: cannot return chain {head}: {e}");
            }
            used_any = true;
        }
        if used_any {
            signal_if_needed(&mut self.tx, &mem, &self.interrupt);
        }
    }

    /// Applies the tx fault rules to a guest frame, then sends it (or not, or later).
    fn send_frame(&mut self, frame: &[u8]) {
        let n = self.tx_seen;
        self.tx_seen += 1;
        let dir = NetDirection::FromGuest;
        match self.fault.decide(dir, n, frame) {
            None => self.backend_send(frame),
            Some(NetFault::Drop) => {
                AtomicCounters::add(&self.counters.tx_drops, 1);
                return;
            }
            Some(NetFault::Duplicate) => {
                self.backend_send(frame);
                self.backend_send(frame);
            }
            Some(NetFault::Corrupt { at, mask }) => {
                let mut copy = frame.to_vec();
                if let Some(b) = copy.get_mut(at) {
                    *b ^= mask;
                }
                self.backend_send(&copy);
            }
            Some(NetFault::Delay(d)) => {
                if self
                    .held
                    .delay(dir, Instant::now() + d, frame.to_vec())
                    .is_err()
                {
                    AtomicCounters::add(&self.counters.tx_drops, 1);
                }
                return;
            }
            Some(NetFault::Reorder) => {
                if let Some(earlier) = self.held.hold_for_reorder(dir, frame.to_vec()) {
                    self.backend_send(&earlier);
                }
                return;
            }
        }
        // A frame went out: one held for reordering follows it.
        if let Some(held) = self.held.take_reordered(dir) {
            self.backend_send(&held);
        }
    }

    fn backend_send(&mut self, frame: &[u8]) {
        match self.backend.send(frame) {
            Ok(()) => {
                AtomicCounters::add(&self.counters.tx_frames, 1);
                AtomicCounters::add(&self.counters.tx_bytes, frame.len() as u64);
            }
            Err(e) => {
                AtomicCounters::add(&self.counters.tx_drops, 1);
                let what = self.backend.describe();
                self.backend_log
                    .warn(|| format!("net {what}: dropping guest frame: {e}"));
            }
        }
    }

    /// Sends or queues for the guest every held frame whose time has come. Returns true if
    /// frames for the guest are waiting (call [`NetHandler::process_rx`]).
    pub(crate) fn release_due(&mut self) -> bool {
        for (dir, frame) in self.held.take_due(Instant::now()) {
            match dir {
                NetDirection::FromGuest => self.backend_send(&frame),
                NetDirection::ToGuest => self.ready_rx.push_back(frame),
            }
        }
        !self.ready_rx.is_empty()
    }

    /// Delivers backend frames into guest rx buffers until either runs out.
    pub(crate) fn process_rx(&mut self) {
        let mem = self.mem.clone();
        let mut used_any = false;
        loop {
            let len = match self.rx_len {
                Some(len) => len,
                None => match self.ready_rx.pop_front() {
                    Some(frame) => {
                        // Released frames were checked against MAX_FRAME_LEN on arrival.
                        let len = frame.len().min(MAX_FRAME_LEN);
                        self.rx_buf[..len].copy_from_slice(&frame[..len]);
                        len
                    }
                    None => match self.recv_frame() {
                        Some(len) => len,
                        None => break,
                    },
                },
            };
            let Some(chain) = self.rx.pop_descriptor_chain(&mem) else {
                // No buffers: keep the frame; the rx queue event resumes us.
                self.rx_len = Some(len);
                break;
            };
            let head = chain.head_index();
            self.rx_len = None;
            match write_rx_frame(&mem, chain, &self.rx_buf[..len]) {
                Ok(written) => {
                    AtomicCounters::add(&self.counters.rx_frames, 1);
                    AtomicCounters::add(&self.counters.rx_bytes, len as u64);
                    if let Err(e) = self.rx.add_used(&mem, head, written) {
                        tracing::warn!("net rx: cannot return chain {head}: {e}");
                    }
                    used_any = true;
                }
                Err(ChainError::TooSmall { avail, needed }) => {
                    // The frame is lost, the buffer is not: hand it to the next frame.
                    tracing::debug!("net rx: dropping {needed}-byte frame, buffer holds {avail}");
                    AtomicCounters::add(&self.counters.rx_drops, 1);
                    self.rx.go_to_previous_position();
                }
                Err(e) => {
                    // A broken chain is consumed (unused) and the frame tries the next one.
                    tracing::debug!("net rx: unusable chain {head}: {e}");
                    self.rx_len = Some(len);
                    if let Err(e) = self.rx.add_used(&mem, head, 0) {
                        tracing::warn!("net rx: cannot return chain {head}: {e}");
                    }
                    used_any = true;
                }
            }
        }
        if used_any {
            signal_if_needed(&mut self.rx, &mem, &self.interrupt);
        }
    }

    /// Reads the next frame the fault hook lets through; `None` when the backend is drained.
    fn recv_frame(&mut self) -> Option<usize> {
        loop {
            let len = match self.backend.recv(&mut self.rx_buf) {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(
                        "net {}: receive failed, no more frames will reach the guest: {e}",
                        self.backend.describe()
                    );
                    self.rx_broken = true;
                    return None;
                }
            };
            if len > MAX_FRAME_LEN {
                AtomicCounters::add(&self.counters.rx_drops, 1);
                continue;
            }
            if self.apply_rx_faults(len) {
                return Some(len);
            }
        }
    }

    /// Applies the rx fault rules to the frame in `rx_buf[..len]`; true if it goes to the
    /// guest now (possibly changed), false if it was dropped or held back.
    fn apply_rx_faults(&mut self, len: usize) -> bool {
        let n = self.rx_seen;
        self.rx_seen += 1;
        let dir = NetDirection::ToGuest;
        let frame = &self.rx_buf[..len];
        match self.fault.decide(dir, n, frame) {
            None => {}
            Some(NetFault::Drop) => {
                AtomicCounters::add(&self.counters.rx_drops, 1);
                return false;
            }
            Some(NetFault::Duplicate) => self.ready_rx.push_back(frame.to_vec()),
            Some(NetFault::Corrupt { at, mask }) => {
                if let Some(b) = self.rx_buf[..len].get_mut(at) {
                    *b ^= mask;
                }
            }
            Some(NetFault::Delay(d)) => {
                if self
                    .held
                    .delay(dir, Instant::now() + d, frame.to_vec())
                    .is_err()
                {
                    AtomicCounters::add(&self.counters.rx_drops, 1);
                }
                return false;
            }
            Some(NetFault::Reorder) => {
                if let Some(earlier) = self.held.hold_for_reorder(dir, frame.to_vec()) {
                    self.ready_rx.push_back(earlier);
                }
                return false;
            }
        }
        // This frame goes now; one held for reordering follows it.
        if let Some(held) = self.held.take_reordered(dir) {
            self.ready_rx.push_back(held);
        }
        true
    }

    /// Gives the backend back when the device is reset.
    pub(crate) fn into_backend(self) -> Box<dyn NetBackend> {
        self.backend
    }
}

fn signal_if_needed(queue: &mut Queue, mem: &GuestMemory, interrupt: &VirtioInterrupt) {
    match queue.needs_notification(mem) {
        Ok(false) => {}
        // On error, interrupting spuriously is harmless; staying silent could hang the driver.
        Ok(true) | Err(_) => interrupt.signal_used_queue(),
    }
}

/// Reads header + frame from a device-readable chain and returns the frame.
fn read_tx_frame(mem: &GuestMemory, chain: Chain<'_>) -> Result<Vec<u8>, ChainError> {
    if chain.clone().any(|d| d.is_write_only()) {
        return Err(ChainError::WrongDirection);
    }
    let mut reader = chain
        .reader(mem)
        .map_err(|e| ChainError::Memory(e.to_string()))?;
    let total = reader.available_bytes();
    let frame_len = total
        .checked_sub(NET_HDR_LEN)
        .ok_or(ChainError::NoHeader(total))?;
    if frame_len > MAX_FRAME_LEN {
        return Err(ChainError::TooBig(frame_len));
    }
    let mut hdr = [0u8; NET_HDR_LEN];
    let mut frame = vec![0u8; frame_len];
    reader
        .read_exact(&mut hdr)
        .and_then(|()| reader.read_exact(&mut frame))
        .map_err(|e| ChainError::Memory(e.to_string()))?;
    Ok(frame)
}

/// Writes a zeroed header (num_buffers = 1) and the frame into a device-writable chain.
fn write_rx_frame(mem: &GuestMemory, chain: Chain<'_>, frame: &[u8]) -> Result<u32, ChainError> {
    if chain.clone().any(|d| !d.is_write_only()) {
        return Err(ChainError::WrongDirection);
    }
    let mut writer = chain
        .writer(mem)
        .map_err(|e| ChainError::Memory(e.to_string()))?;
    let needed = NET_HDR_LEN + frame.len();
    let avail = writer.available_bytes();
    if avail < needed {
        return Err(ChainError::TooSmall { avail, needed });
    }
    let mut hdr = [0u8; NET_HDR_LEN];
    // num_buffers: must be 1 without VIRTIO_NET_F_MRG_RXBUF (virtio 1.x, 5.1.6.4).
    hdr[10..12].copy_from_slice(&1u16.to_le_bytes());
    writer
        .write_all(&hdr)
        .and_then(|()| writer.write_all(frame))
        .map_err(|e| ChainError::Memory(e.to_string()))?;
    // `needed` <= MAX_FRAME_LEN + 12, far below u32::MAX.
    Ok(needed as u32)
}
