//! Parking the device event loop: while a snapshot reads device state and guest memory, no
//! device may process a queue. A closure sent to the loop signals that it runs (so no handler
//! is in the middle of anything) and blocks until the snapshot lets it go.

use std::sync::mpsc::{channel, Sender};
use std::time::Duration;

use devices::virtio::EventLoopEndpoint;

use super::SnapshotError;

/// How long to wait for the event loop to reach the parking closure.
const PARK_TIMEOUT: Duration = Duration::from_secs(30);

/// The event loop, parked until this is dropped.
pub struct Parked {
    _release: Sender<()>,
}

/// Parks the event loop behind `endpoint`.
pub fn park(endpoint: &EventLoopEndpoint) -> Result<Parked, SnapshotError> {
    let (parked_tx, parked_rx) = channel();
    let (release_tx, release_rx) = channel::<()>();
    endpoint
        .fire(move |_| {
            let _ = parked_tx.send(());
            // Returns once the sender is dropped.
            let _ = release_rx.recv();
        })
        .map_err(|e| SnapshotError::Save(format!("cannot reach the device event loop: {e:?}")))?;
    parked_rx
        .recv_timeout(PARK_TIMEOUT)
        .map_err(|_| SnapshotError::Save("the device event loop did not pause".into()))?;
    Ok(Parked {
        _release: release_tx,
    })
}
