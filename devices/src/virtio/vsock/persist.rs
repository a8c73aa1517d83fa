//! Saving and restoring a virtio-vsock device. Connections are not saved: their host ends
//! belonged to the old process. The restored device listens on the host's socket (the saved
//! one or another, for a fork) and, once running, sends the guest
//! `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET`, so guest sockets reset and peers reconnect.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::config::{VsockConfig, VsockError};
use super::device::Vsock;
use crate::fault::VsockFaults;
use crate::persist::Persist;
use crate::virtio::EventLoopEndpoint;

/// A vsock device's saved state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockState {
    /// The guest's CID.
    pub cid: u64,
    /// The host socket it had.
    pub uds_path: PathBuf,
}

/// What the host supplies to a restored vsock device.
pub struct VsockHostParts {
    /// CID and host socket from now on (a new CID reaches the guest with the reset event).
    pub config: VsockConfig,
    /// The event loop the handler runs on.
    pub endpoint: EventLoopEndpoint,
    /// vsock reset rules (from the restoring host; rules are not part of a snapshot).
    pub faults: VsockFaults,
}

impl Persist for Vsock {
    type State = VsockState;
    type HostParts = VsockHostParts;
    type Error = VsockError;

    fn save(&self) -> VsockState {
        VsockState {
            cid: self.config().cid,
            uds_path: self.config().uds_path.clone(),
        }
    }

    fn restore(parts: VsockHostParts, _state: &VsockState) -> Result<Self, VsockError> {
        let mut vsock = Vsock::new(parts.config, parts.endpoint)?;
        vsock.set_faults(parts.faults);
        vsock.reset_on_activate = true;
        Ok(vsock)
    }
}
