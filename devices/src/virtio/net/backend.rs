//! Where frames go to and come from: the contract between the net handler and a backend.

use std::io;
use std::os::fd::AsRawFd;

/// A source and sink of whole Ethernet frames (no virtio header), non-blocking.
///
/// The handler polls [`AsRawFd::as_raw_fd`] for readability and calls [`NetBackend::recv`]
/// until it reports [`io::ErrorKind::WouldBlock`].
pub trait NetBackend: AsRawFd + Send {
    /// Sends one frame. Errors mean the frame was not sent; the handler drops it.
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;
    /// Receives one frame into `buf`, returning its length, or `WouldBlock` when none is ready.
    /// Frames longer than `buf` may be truncated by the backend; the handler treats a
    /// completely filled buffer as oversized.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// A short description for logs and the default MAC (e.g. `switch=/run/sw.sock`).
    fn describe(&self) -> String;
}
