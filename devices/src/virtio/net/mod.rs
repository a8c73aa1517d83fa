//! virtio-net (device type 1): one rx and one tx queue, a MAC in config space, link always up.
//!
//! Frames leave and enter through a [`NetBackend`]: a userspace switch reached over a Unix
//! datagram socket ([`SwitchBackend`]) or a host TAP interface ([`TapBackend`]). No offloads
//! are offered, so every frame is a plain Ethernet frame behind a zeroed 12-byte
//! `virtio_net_hdr_v1`. Every frame passes the NIC's fault rules ([`crate::fault::NetFaults`]).

mod backend;
mod config;
mod counters;
mod device;
mod error;
mod event_handler;
#[cfg(test)]
mod fault_tests;
mod handler;
mod held_frames;
mod log_limit;
mod mac;
mod persist;
mod switch;
mod tap;
#[cfg(test)]
pub(crate) mod test_driver;
#[cfg(test)]
pub(crate) mod tests;

pub use backend::NetBackend;
pub use config::{NetBackendConfig, NetConfig, NetConfigError};
pub use counters::NetCounters;
pub use device::Net;
pub use error::NetError;
pub use mac::{MacAddr, MacParseError};
pub use persist::{NetHostParts, NetState};
pub use switch::SwitchBackend;
pub use tap::TapBackend;

/// Size of `virtio_net_hdr_v1` (always 12 bytes once `VIRTIO_F_VERSION_1` is negotiated).
pub const NET_HDR_LEN: usize = 12;
/// Largest frame (without the virtio header) accepted from the guest or a backend.
pub const MAX_FRAME_LEN: usize = 65550;
/// Queue size offered for both queues.
pub const QUEUE_SIZE: u16 = 256;
/// Index of the receive queue.
pub const RX_INDEX: usize = 0;
/// Index of the transmit queue.
pub const TX_INDEX: usize = 1;
