//! Polling with a deadline and a message naming what was awaited.

use std::time::{Duration, Instant};

use super::error::{ClusterError, Result};

/// What one probe saw.
pub enum Probe<T> {
    /// The awaited thing happened.
    Done(T),
    /// Not yet; the text says what was seen (shown if the wait times out).
    NotYet(String),
}

/// Calls `probe` until it is done, fails, or `timeout` passes; sleeps between probes
/// starting at 20 ms and backing off to 500 ms.
pub fn poll_until<T>(
    node: &str,
    what: impl Fn() -> String,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<Probe<T>>,
) -> Result<T> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        let last = match probe()? {
            Probe::Done(v) => return Ok(v),
            Probe::NotYet(seen) => Some(seen),
        };
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return Err(ClusterError::Timeout {
                node: node.to_string(),
                what: what(),
                after: elapsed,
                last,
            });
        }
        std::thread::sleep(pause.min(timeout - elapsed));
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}
