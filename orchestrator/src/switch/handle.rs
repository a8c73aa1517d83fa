//! The handle that controls a running switch: ports, link faults, counters, stop.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::link::LinkRule;
use super::peer::PeerAddr;
use super::state::State;
use super::stats::{PortInfo, PortStats};
use super::worker::lock;
use super::SwitchError;

/// Controls a running switch. Thread-safe (`Send + Sync`); share it with `Arc`.
/// Dropping it stops the switch and removes its socket file.
///
/// Links are named by node: a port attached with [`SwitchHandle::attach`] carries the node
/// name; a port learned from traffic alone is named by its peer address (`@name` for
/// abstract addresses, the path otherwise). Link rules apply to a direction `from -> to`;
/// rules may be set before the ports exist.
#[derive(Debug)]
pub struct SwitchHandle {
    path: PathBuf,
    state: Arc<Mutex<State>>,
    wake: UnixDatagram,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").finish_non_exhaustive()
    }
}

impl SwitchHandle {
    pub(super) fn new(
        path: PathBuf,
        state: Arc<Mutex<State>>,
        wake: UnixDatagram,
        thread: JoinHandle<()>,
    ) -> Self {
        SwitchHandle {
            path,
            state,
            wake,
            thread: Mutex::new(Some(thread)),
        }
    }

    /// The switch's socket path (what a VMM's `switch=` backend sends to).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Names the port whose peer socket is `peer` as `node`, so links can be addressed by node.
    /// Attaching the same pair again is a no-op. A node restarted with a new socket is
    /// re-attached with [`SwitchHandle::detach`] then `attach`; its MAC moves with its traffic.
    pub fn attach(&self, node: &str, peer: &SocketAddr) -> Result<(), SwitchError> {
        let peer = PeerAddr::from_std(peer).ok_or(SwitchError::UnnamedPeer)?;
        lock(&self.state).attach(node, peer)
    }

    /// Removes the port named `node` and its learned MAC addresses. Returns whether it existed.
    pub fn detach(&self, node: &str) -> bool {
        lock(&self.state).detach(node)
    }

    /// Blocks frames both ways between `a` and `b`.
    pub fn partition(&self, a: &str, b: &str) {
        let mut st = lock(&self.state);
        st.update_rule(a, b, |r| r.blocked = true);
        st.update_rule(b, a, |r| r.blocked = true);
    }

    /// Blocks frames from `from` to `to` only; `to -> from` still passes.
    pub fn block(&self, from: &str, to: &str) {
        lock(&self.state).update_rule(from, to, |r| r.blocked = true);
    }

    /// Unblocks both directions between `a` and `b` (loss and delay rules stay).
    pub fn heal(&self, a: &str, b: &str) {
        let mut st = lock(&self.state);
        st.update_rule(a, b, |r| r.blocked = false);
        st.update_rule(b, a, |r| r.blocked = false);
    }

    /// Unblocks every link (loss and delay rules stay).
    pub fn heal_all(&self) {
        lock(&self.state).heal_all();
    }

    /// Drops frames from `from` to `to` with probability `loss` (0.0..=1.0), drawn from a
    /// random source seeded by the switch seed and the link, so runs replay exactly.
    pub fn set_loss(&self, from: &str, to: &str, loss: f64) -> Result<(), SwitchError> {
        if !(0.0..=1.0).contains(&loss) {
            return Err(SwitchError::BadLoss(loss));
        }
        lock(&self.state).update_rule(from, to, |r| r.loss = loss);
        Ok(())
    }

    /// Holds frames from `from` to `to` for `delay` (zero removes the delay). Frames on one
    /// link keep their order; other links are not held up.
    pub fn set_delay(&self, from: &str, to: &str, delay: Duration) {
        lock(&self.state).update_rule(from, to, |r| r.delay = delay);
    }

    /// The current rule for frames from `from` to `to`.
    pub fn link(&self, from: &str, to: &str) -> LinkRule {
        lock(&self.state).rule(from, to)
    }

    /// Counters of the port named `node` (a node name, or a learned port's address text).
    pub fn stats(&self, node: &str) -> Option<PortStats> {
        lock(&self.state).stats(node)
    }

    /// Every port with its counters.
    pub fn ports(&self) -> Vec<PortInfo> {
        lock(&self.state).ports()
    }

    /// Frames dropped because the sender's socket was unnamed (nothing to reply to).
    pub fn unaddressed(&self) -> u64 {
        lock(&self.state).unaddressed()
    }

    /// Stops the switch thread and removes the socket file. Idempotent.
    pub fn stop(&self) -> Result<(), SwitchError> {
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(thread) = thread else {
            return Ok(());
        };
        // The worker polls this socket; if the write fails the worker is already gone.
        let _ = self.wake.send(&[1]);
        let joined = thread.join();
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "switch: cannot remove socket");
            }
        }
        joined.map_err(|_| SwitchError::ThreadPanicked)
    }
}

impl Drop for SwitchHandle {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(error = %e, "switch: stop on drop failed");
        }
    }
}
