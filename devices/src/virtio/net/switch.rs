//! Backend that talks to Kiln's userspace L2 switch over a Unix datagram socket.
//!
//! One Ethernet frame per datagram. The VMM binds its own socket (by default an abstract
//! address `\0kiln-net-<pid>-<n>`, so nothing is left on disk) and sends every frame to the
//! switch's path with `sendto`, which keeps working if the switch restarts at the same path.
//! The switch learns the VMM's address from the datagrams' source. Datagrams from anyone but
//! the switch are ignored.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::backend::NetBackend;
use super::error::NetError;

/// A port on a userspace switch.
#[derive(Debug)]
pub struct SwitchBackend {
    socket: UnixDatagram,
    switch_path: PathBuf,
}

impl SwitchBackend {
    /// Binds a local socket (`local`, or an abstract address when `None`) and targets the
    /// switch socket at `switch_path`, which must already exist.
    pub fn new(switch_path: &Path, local: Option<&Path>) -> Result<Self, NetError> {
        let meta = std::fs::metadata(switch_path).map_err(|e| NetError::SwitchMissing {
            path: switch_path.to_path_buf(),
            source: e,
        })?;
        if !meta.file_type().is_socket() {
            return Err(NetError::SwitchNotSocket(switch_path.to_path_buf()));
        }
        let socket = match local {
            Some(path) => UnixDatagram::bind(path),
            None => {
                static NEXT: AtomicU32 = AtomicU32::new(0);
                let name = format!(
                    "kiln-net-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                );
                SocketAddr::from_abstract_name(name.as_bytes())
                    .and_then(|addr| UnixDatagram::bind_addr(&addr))
            }
        }
        .and_then(|s| s.set_nonblocking(true).map(|()| s))
        .map_err(|e| NetError::SwitchBind {
            local: local.map(Path::to_path_buf),
            source: e,
        })?;
        Ok(SwitchBackend {
            socket,
            switch_path: switch_path.to_path_buf(),
        })
    }

    /// The address this port sends from (what the switch sees as the source).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

impl AsRawFd for SwitchBackend {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl NetBackend for SwitchBackend {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.socket.send_to(frame, &self.switch_path).map(|_| ())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let (n, from) = self.socket.recv_from(buf)?;
            if from.as_pathname() == Some(self.switch_path.as_path()) {
                return Ok(n);
            }
            tracing::debug!(?from, "net: ignoring datagram not sent by the switch");
        }
    }

    fn describe(&self) -> String {
        format!("switch={}", self.switch_path.display())
    }
}
