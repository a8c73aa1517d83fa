//! A log line that is emitted at most once per interval, so a dead peer cannot flood the log.

use std::time::{Duration, Instant};

/// Remembers when it last logged and how many messages it swallowed since.
#[derive(Debug)]
pub(crate) struct RateLimitedLog {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    pub(crate) fn new(interval: Duration) -> Self {
        RateLimitedLog {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// Logs `msg` as a warning unless one was logged within the interval.
    pub(crate) fn warn(&mut self, msg: impl FnOnce() -> String) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < self.interval)
        {
            self.suppressed += 1;
            return;
        }
        let suppressed = std::mem::take(&mut self.suppressed);
        tracing::warn!(suppressed, "{}", msg());
        self.last = Some(now);
    }
}
