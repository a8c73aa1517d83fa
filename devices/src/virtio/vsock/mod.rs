//! virtio-vsock (device type 19) with a Firecracker-style host side.
//!
//! The guest gets a CID; the host side is one Unix listening socket per VM at `uds_path`:
//! - host-initiated: a host process connects to `uds_path`, writes `CONNECT <port>\n`; the
//!   device opens a stream to guest port `<port>` and, once the guest accepts, writes
//!   `OK <host port>\n` back; then bytes flow both ways;
//! - guest-initiated: a guest connection to host (CID 2) port `P` is connected to the Unix
//!   socket `<uds_path>_P`; if nothing listens there the guest gets an RST.
//!
//! Flow control is the virtio-vsock credit scheme both ways. Memory is bounded: each
//! connection buffers at most [`CONN_BUF_ALLOC`] bytes towards the host (the credit it grants
//! the guest), reads from the host only what the guest has credit for, and at most
//! [`MAX_CONNECTIONS`] connections exist. Connections whose peer never answers stay until the
//! device is reset (bounded by the same limit).

mod config;
mod connection;
mod device;
mod event_handler;
mod handler;
mod host_connect;
mod muxer;
pub mod packet;
mod persist;
#[cfg(test)]
mod tests;

pub use config::{VsockConfig, VsockError};
pub use device::Vsock;
pub use persist::{VsockHostParts, VsockState};

/// The host's CID.
pub const HOST_CID: u64 = 2;
/// Queue size offered for each of the three queues.
pub const QUEUE_SIZE: u16 = 256;
/// Index of the rx queue (device to guest).
pub const RX_INDEX: usize = 0;
/// Index of the tx queue (guest to device).
pub const TX_INDEX: usize = 1;
/// Index of the event queue.
pub const EVENT_INDEX: usize = 2;
/// Largest data payload of one packet in either direction.
pub const MAX_PKT_DATA: usize = 64 * 1024;
/// Buffer space (`buf_alloc`) each connection grants the guest.
pub const CONN_BUF_ALLOC: u32 = 256 * 1024;
/// Send a credit update once this many bytes were forwarded since the guest last heard.
pub const CREDIT_UPDATE_THRESHOLD: u32 = 64 * 1024;
/// Most simultaneous connections per device.
pub const MAX_CONNECTIONS: usize = 256;
/// Most accepted host clients still sending their `CONNECT` line.
pub const MAX_PENDING_HOST: usize = 32;
/// Most RSTs waiting for rx buffers before the tx queue is no longer read.
pub const MAX_CONTROL_BACKLOG: usize = 256;
/// How long a host `CONNECT` waits for the guest to answer its REQUEST before the device
/// gives up (RST to the guest, the host client's stream closed). Generous: a guest sharing
/// an emulated CPU with others was measured answering after more than 5 s, and a client
/// that gives up sooner hangs up (which resets the request at once); this only keeps a
/// guest that never answers from holding a patient client forever.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);
