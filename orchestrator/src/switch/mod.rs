//! A userspace L2 switch, one per cluster network.
//!
//! The switch binds a Unix datagram socket at a path. Each VMM's virtio-net switch backend
//! sends one raw Ethernet frame per datagram to that path from its own socket; the source
//! address of those datagrams is the VM's port, and replies go back to it with `sendto`.
//! Frames are switched as a learning bridge would: source MACs are learned per port (and
//! forgotten after an ageing time), unicast to a known MAC goes to its port only, and
//! broadcast, multicast and unknown unicast go to every other port.
//!
//! Faults are per directed link between nodes and can change while the switch runs:
//! block (one way or both, i.e. partition), loss with a seeded random source, and delay.
//! The switch runs on its own thread; [`SwitchHandle`] controls it and stops it on drop.
//!
//! Like a real switch it never waits for a slow peer: a frame a peer's socket will not take
//! at once (Linux queues at most `net.unix.max_dgram_qlen` datagrams, 10 by default, for an
//! unconnected receiver) is dropped and counted in that port's `dropped`.

mod error;
mod frame;
mod handle;
mod link;
mod peer;
mod state;
mod stats;
mod worker;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod vmm_interop_tests;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use error::SwitchError;
pub use frame::{MAX_FRAME, MIN_FRAME};
pub use handle::SwitchHandle;
pub use link::LinkRule;
pub use stats::{PortInfo, PortStats};

/// Settings of a switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwitchConfig {
    /// Seed of the random sources used for loss; the same seed and traffic give the same drops.
    pub seed: u64,
    /// A learned MAC address is forgotten after this long without a frame from it.
    pub mac_ageing: Duration,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig {
            seed: 0,
            mac_ageing: Duration::from_secs(300),
        }
    }
}

/// Starts switches.
#[derive(Debug)]
pub struct Switch;

impl Switch {
    /// Binds a switch socket at `path` and starts switching on a new thread.
    pub fn start(path: impl AsRef<Path>, seed: u64) -> Result<SwitchHandle, SwitchError> {
        Self::start_with(
            path,
            SwitchConfig {
                seed,
                ..SwitchConfig::default()
            },
        )
    }

    /// Like [`Switch::start`] with every setting given.
    pub fn start_with(
        path: impl AsRef<Path>,
        config: SwitchConfig,
    ) -> Result<SwitchHandle, SwitchError> {
        // VMMs accept frames only from the exact path they send to; an absolute path makes
        // `SwitchHandle::path` the one to hand them.
        let path = std::path::absolute(path.as_ref()).map_err(SwitchError::Setup)?;
        let socket = bind(&path).map_err(|source| SwitchError::Bind {
            path: path.clone(),
            source,
        })?;
        let cleanup = |e: std::io::Error| {
            let _ = std::fs::remove_file(&path);
            SwitchError::Setup(e)
        };
        socket.set_nonblocking(true).map_err(cleanup)?;
        let (wake_tx, wake_rx) = UnixDatagram::pair().map_err(cleanup)?;
        let state = Arc::new(Mutex::new(state::State::new(
            config.seed,
            config.mac_ageing,
        )));
        let worker_state = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("kiln-switch".to_string())
            .spawn(move || worker::run(socket, wake_rx, worker_state))
            .map_err(|e| {
                let _ = std::fs::remove_file(&path);
                SwitchError::Thread(e)
            })?;
        tracing::debug!(path = %path.display(), seed = config.seed, "switch started");
        Ok(SwitchHandle::new(path, state, wake_tx, thread))
    }
}

/// Binds the switch socket, replacing a stale socket file left by a switch that died
/// (one nobody receives on); a live switch at the path is left alone.
fn bind(path: &Path) -> std::io::Result<UnixDatagram> {
    match UnixDatagram::bind(path) {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && is_stale_socket(path) => {
            tracing::info!(path = %path.display(), "switch: replacing stale socket");
            std::fs::remove_file(path)?;
            UnixDatagram::bind(path)
        }
        other => other,
    }
}

fn is_stale_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    is_socket
        && UnixDatagram::unbound()
            .and_then(|probe| probe.connect(path))
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
}
