//! Saving and restoring a virtio-blk device. The image is not part of the state: the host
//! names the file to use (the saved path, or a copy for a fork), and it must have the size the
//! guest saw.

use std::path::PathBuf;
use std::sync::Arc;

use super::device::{Block, BlockConfig, BlockError, BlockState};
use super::request::ID_BYTES;
use crate::fault::FaultHook;
use crate::persist::Persist;
use crate::virtio::EventLoopEndpoint;

/// What the host supplies to a restored disk.
pub struct BlockHostParts {
    /// The image to use; it must have the saved size.
    pub path: PathBuf,
    /// The event loop the request handler runs on.
    pub endpoint: Option<EventLoopEndpoint>,
    /// Sees every request.
    pub fault: Arc<dyn FaultHook>,
}

impl Persist for Block {
    type State = BlockState;
    type HostParts = BlockHostParts;
    type Error = BlockError;

    fn save(&self) -> BlockState {
        self.state().clone()
    }

    fn restore(parts: BlockHostParts, state: &BlockState) -> Result<Self, BlockError> {
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
        };
        let block = Block::new(config, parts.endpoint, parts.fault)?;
        if block.capacity_sectors() != state.capacity_sectors {
            return Err(BlockError::SizeChanged {
                path: block.state().path.clone(),
                size: block.capacity_sectors() * 512,
                saved: state.capacity_sectors * 512,
            });
        }
        Ok(block)
    }
}
