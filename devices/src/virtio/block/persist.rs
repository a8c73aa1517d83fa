//! Saving and restoring a virtio-blk device. The image is not part of the state: the host
//! names the file to use (the saved path, or a copy for a fork), and it must have the size the
//! guest saw. The restored device gets the same backend stack as a booted one
//! ([`super::backend::open_stack`]: the fault layer over a write cache, if the disk has one,
//! over the file), with the cache mode and fault hook the host supplies.
//!
//! Two things a running disk holds outside guest memory and the queue:
//! - a write cache's unflushed writes: the snapshot first writes them back
//!   ([`Block::write_back`]), so the image holds everything the guest was told is written;
//! - completions a fault delay holds back: their requests are done but the guest has not
//!   seen them, and the saved queue has already moved past them. They are saved
//!   ([`BlockSavedState::held`]) and the restored device holds them back again for the time
//!   they had left, so the guest sees each one complete, once.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::backend::CacheMode;
use super::device::{Block, BlockConfig, BlockError, BlockState};
use super::request::ID_BYTES;
use crate::fault::BlockFaults;
use crate::persist::Persist;
use crate::virtio::queue_handler::HeldCompletion;
use crate::virtio::EventLoopEndpoint;

/// A virtio-blk device's saved state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockSavedState {
    /// Disk identity, size, features and config space.
    pub device: BlockState,
    /// Completions a fault delay still held back, earliest first.
    pub held: Vec<HeldCompletion>,
}

/// What the host supplies to a restored disk.
pub struct BlockHostParts {
    /// The image to use; it must have the saved size.
    pub path: PathBuf,
    /// Write-through or a write-back cache (the disk's saved mode, normally).
    pub cache: CacheMode,
    /// The disk's fault rules (from the restoring host; rules are not part of a snapshot).
    pub faults: BlockFaults,
    /// The event loop the request handler runs on.
    pub endpoint: Option<EventLoopEndpoint>,
}

impl Persist for Block {
    type State = BlockSavedState;
    type HostParts = BlockHostParts;
    type Error = BlockError;

    fn save(&self) -> BlockSavedState {
        BlockSavedState {
            device: self.state().clone(),
            held: self.held_completions(),
        }
    }

    fn restore(parts: BlockHostParts, saved: &BlockSavedState) -> Result<Self, BlockError> {
        let state = &saved.device;
        let id_len = state
            .id
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(state.id.len());
        let id = String::from_utf8_lossy(&state.id[..id_len.min(ID_BYTES)]).into_owned();
        let config = BlockConfig {
            path: parts.path,
            read_only: state.read_only,
            id: (!id.is_empty()).then_some(id),
            cache: parts.cache,
        };
        let mut block = Block::new(config, parts.endpoint, parts.faults)?;
        if block.capacity_sectors() != state.capacity_sectors {
            return Err(BlockError::SizeChanged {
                path: block.state().path.clone(),
                size: block.capacity_sectors() * 512,
                saved: state.capacity_sectors * 512,
            });
        }
        block.restored_held = saved.held.clone();
        Ok(block)
    }
}
