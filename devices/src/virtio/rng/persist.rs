//! Saving and restoring virtio-rng: it has no state beyond its queue (saved by the transport).

use serde::{Deserialize, Serialize};

use super::Rng;
use crate::persist::Persist;
use crate::virtio::EventLoopEndpoint;

/// virtio-rng's saved state: nothing but the fact that it exists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {}

impl Persist for Rng {
    type State = RngState;
    /// The event loop the handler runs on (`None`: process the queue yourself).
    type HostParts = Option<EventLoopEndpoint>;
    type Error = std::convert::Infallible;

    fn save(&self) -> RngState {
        RngState {}
    }

    fn restore(
        endpoint: Option<EventLoopEndpoint>,
        _state: &RngState,
    ) -> Result<Self, Self::Error> {
        Ok(Rng::new(endpoint))
    }
}
