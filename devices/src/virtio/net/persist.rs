//! Saving and restoring a virtio-net device: only the MAC is device state. The backend is the
//! host's (a switch port or TAP, possibly another one than before); frames in flight are lost,
//! as on a real network, and so are frames a fault rule was holding back (delay, reorder).

use serde::{Deserialize, Serialize};

use super::backend::NetBackend;
use super::device::Net;
use super::mac::MacAddr;
use crate::fault::NetFaults;
use crate::persist::Persist;
use crate::virtio::EventLoopEndpoint;

/// A net device's saved state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetState {
    /// The MAC the guest knows.
    pub mac: [u8; 6],
}

/// What the host supplies to a restored net device.
pub struct NetHostParts {
    /// Where frames go from now on.
    pub backend: Box<dyn NetBackend>,
    /// The event loop the handler runs on.
    pub endpoint: EventLoopEndpoint,
    /// The NIC's fault rules (from the restoring host; rules are not part of a snapshot).
    pub faults: NetFaults,
}

impl Persist for Net {
    type State = NetState;
    type HostParts = NetHostParts;
    type Error = std::convert::Infallible;

    fn save(&self) -> NetState {
        NetState {
            mac: self.mac().bytes(),
        }
    }

    fn restore(parts: NetHostParts, state: &NetState) -> Result<Self, Self::Error> {
        Ok(Net::with_backend(
            parts.backend,
            Some(MacAddr(state.mac)),
            parts.endpoint,
            parts.faults,
        ))
    }
}
