//! The one hook point that every block request and every network frame passes through.
//!
//! Fault rules (errors, delays, drops, corruption) are applied here. For now every hook is a
//! no-op that lets the operation through; the rules engine plugs in behind [`FaultHook`]
//! without reshaping the devices.

use serde::{Deserialize, Serialize};

/// What a block request is about to do, as seen by the fault hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockOp {
    /// Read `len` bytes at byte offset `offset`.
    Read { offset: u64, len: u32 },
    /// Write `len` bytes at byte offset `offset`.
    Write { offset: u64, len: u32 },
    /// Flush to stable storage.
    Flush,
    /// Any other request (get-id, unsupported types).
    Other,
}

/// Direction of a network frame relative to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetDirection {
    /// The guest transmitted this frame.
    FromGuest,
    /// This frame is about to be delivered to the guest.
    ToGuest,
}

/// What the device should do with an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultAction {
    /// Carry on as normal.
    Pass,
    /// Fail the operation (block: `VIRTIO_BLK_S_IOERR`).
    Fail,
    /// Drop it silently (net frames).
    Drop,
}

/// Decides the fate of each block request and net frame. Shared by a device and the
/// control API, so implementations must be thread-safe.
pub trait FaultHook: Send + Sync {
    /// Called once per block request, before it touches the backing file.
    fn on_block(&self, _op: &BlockOp) -> FaultAction {
        FaultAction::Pass
    }
    /// Called once per Ethernet frame in either direction.
    fn on_net_frame(&self, _dir: NetDirection, _frame: &[u8]) -> FaultAction {
        FaultAction::Pass
    }
}

/// The hook used until rules are attached: lets everything through.
#[derive(Debug, Default)]
pub struct NoFaults;

impl FaultHook for NoFaults {}
