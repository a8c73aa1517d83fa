//! Per-device traffic counters, shared between the event-loop handler and whoever reports them.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// A snapshot of a net device's counters (serializable for the control API and snapshots).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetCounters {
    /// Frames delivered into guest rx buffers.
    pub rx_frames: u64,
    /// Bytes (without the virtio header) delivered to the guest.
    pub rx_bytes: u64,
    /// Frames for the guest that were dropped (too big, fault rule, bad rx chain).
    pub rx_drops: u64,
    /// Frames from the guest handed to the backend.
    pub tx_frames: u64,
    /// Bytes (without the virtio header) handed to the backend.
    pub tx_bytes: u64,
    /// Frames from the guest that were dropped (malformed, too big, fault rule, backend error).
    pub tx_drops: u64,
}

/// Lock-free counters updated by the handler.
#[derive(Debug, Default)]
pub(crate) struct AtomicCounters {
    pub(crate) rx_frames: AtomicU64,
    pub(crate) rx_bytes: AtomicU64,
    pub(crate) rx_drops: AtomicU64,
    pub(crate) tx_frames: AtomicU64,
    pub(crate) tx_bytes: AtomicU64,
    pub(crate) tx_drops: AtomicU64,
}

impl AtomicCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> NetCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NetCounters {
            rx_frames: get(&self.rx_frames),
            rx_bytes: get(&self.rx_bytes),
            rx_drops: get(&self.rx_drops),
            tx_frames: get(&self.tx_frames),
            tx_bytes: get(&self.tx_bytes),
            tx_drops: get(&self.tx_drops),
        }
    }
}
