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
/// starting at 20 ms and backing off to a tenth of the time waited so far (at least
/// 500 ms, at most 5 s). A probe usually runs a command in the guest, which on a loaded
/// emulated host costs the CPU every booting node needs: a long wait probes less often,
/// and notices success at most about 10% late.
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
        pause = (pause * 2).min(longest_pause(start.elapsed()));
    }
}

/// The longest sleep between probes after waiting `waited`.
fn longest_pause(waited: Duration) -> Duration {
    (waited / 10).clamp(Duration::from_millis(500), Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_space_out_as_a_wait_grows() {
        assert_eq!(longest_pause(Duration::ZERO), Duration::from_millis(500));
        assert_eq!(
            longest_pause(Duration::from_secs(20)),
            Duration::from_secs(2)
        );
        assert_eq!(
            longest_pause(Duration::from_secs(600)),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn a_wait_ends_when_the_probe_is_done_or_the_time_is_up() {
        let mut calls = 0;
        let v = poll_until(
            "n",
            || "x".into(),
            Duration::from_secs(5),
            || {
                calls += 1;
                Ok(if calls == 3 {
                    Probe::Done(7)
                } else {
                    Probe::NotYet("no".into())
                })
            },
        )
        .unwrap();
        assert_eq!((v, calls), (7, 3));
        let err = poll_until::<()>(
            "n",
            || "the thing".into(),
            Duration::from_millis(50),
            || Ok(Probe::NotYet("still no".into())),
        )
        .unwrap_err();
        assert!(err.to_string().contains("the thing"), "{err}");
    }
}
