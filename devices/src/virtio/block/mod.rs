//! virtio-blk on a raw image file: the device the transport sees ([`Block`]), request
//! parsing ([`request`]) and the event-loop side that executes requests ([`handler`]).

mod device;
pub mod handler;
mod persist;
pub mod request;
#[cfg(test)]
mod tests;

pub use device::{Block, BlockConfig, BlockError, BlockState, QUEUE_SIZE};
pub use persist::BlockHostParts;
