//! virtio-blk on a raw image file: the device the transport sees ([`Block`]), request
//! parsing ([`request`]) and the event-loop side that executes requests ([`handler`]).

pub mod backend;
mod device;
#[cfg(test)]
mod fault_tests;
pub mod handler;
mod persist;
#[cfg(test)]
mod persist_tests;
pub mod request;
#[cfg(test)]
pub(crate) mod tests;

pub use device::{Block, BlockConfig, BlockError, BlockState, QUEUE_SIZE};
pub use persist::{BlockHostParts, BlockSavedState};
