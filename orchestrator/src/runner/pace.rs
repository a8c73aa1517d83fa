//! How fast this host runs guests, relative to the machine Kiln's time limits were set on,
//! so that a slow host gets proportionally more time instead of failing.
//!
//! Machines of one kind differ several-fold in emulated speed (PLATFORM.md: the same run
//! took 6 minutes on one and 33 on another). Starting processes, timed at the start of a
//! run, says how much slower this one is; every wait and time limit of the run is then
//! scaled by that factor (never below 1), and the run says so. Process start-up is the
//! yardstick because it is what booting guests spend their time on, and what emulation
//! slows most (measured in the emulated host: 60 ms per spawn against 0.8 ms on the
//! machine itself, while a pure integer loop runs at native speed under TCG).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Processes started per calibration.
const SPAWNS: u32 = 20;

/// Seconds [`calibration_seconds`] took inside the emulated KVM host on the reference
/// machine (2 cores of an AMD EPYC under PVM, 2026-12-02: 1.02-1.35 s over 6 runs, p50
/// 1.10 s).
pub const REFERENCE_EMULATED_SECONDS: f64 = 1.10;

/// Never scale by more than this: a host this slow needs fixing, not waiting.
const MAX_FACTOR: f64 = 8.0;

/// The run's pace: the factor its waits are scaled by and how it was found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// Waits and time limits are multiplied by this (>= 1).
    pub factor: f64,
    /// The calibration loop's time here, seconds.
    pub measured: f64,
}

impl Pace {
    /// No scaling.
    pub const REFERENCE: Pace = Pace {
        factor: 1.0,
        measured: REFERENCE_EMULATED_SECONDS,
    };

    /// Times the calibration loop (best of three, so a moment of noise does not count)
    /// and compares it with the reference machine.
    pub fn measure() -> Pace {
        let measured = (0..3)
            .map(|_| calibration_seconds())
            .fold(f64::INFINITY, f64::min);
        Pace::from_seconds(measured)
    }

    /// The pace for a calibration loop that took `measured` seconds.
    pub fn from_seconds(measured: f64) -> Pace {
        let factor = (measured / REFERENCE_EMULATED_SECONDS).clamp(1.0, MAX_FACTOR);
        Pace { factor, measured }
    }

    /// `limit` scaled by the factor.
    pub fn scale(&self, limit: Duration) -> Duration {
        limit.mul_f64(self.factor)
    }

    /// One line for the run's output.
    pub fn describe(&self) -> String {
        if self.factor > 1.0 {
            format!(
                "this host runs guests {:.1}x slower than the reference machine (calibration \
                 {:.2} s vs {REFERENCE_EMULATED_SECONDS:.2} s): waits and time limits are \
                 scaled by {:.1}",
                self.factor, self.measured, self.factor
            )
        } else {
            format!(
                "this host is at least as fast as the reference machine (calibration {:.2} s \
                 vs {REFERENCE_EMULATED_SECONDS:.2} s): waits are as written",
                self.measured
            )
        }
    }
}

/// Seconds it takes to start and reap [`SPAWNS`] short processes (`true`, found on PATH).
/// A spawn that fails counts as taking what it took: the factor only has to be roughly right.
pub fn calibration_seconds() -> f64 {
    let started = Instant::now();
    for _ in 0..SPAWNS {
        let _ = Command::new("true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    started.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slower_hosts_get_proportionally_more_time_never_less() {
        let fast = Pace::from_seconds(REFERENCE_EMULATED_SECONDS / 10.0);
        assert_eq!(fast.factor, 1.0);
        assert_eq!(fast.scale(Duration::from_secs(60)), Duration::from_secs(60));
        assert!(fast.describe().contains("as written"));
        let slow = Pace::from_seconds(REFERENCE_EMULATED_SECONDS * 3.0);
        assert!((slow.factor - 3.0).abs() < 1e-9);
        assert_eq!(
            slow.scale(Duration::from_secs(60)),
            Duration::from_secs(180)
        );
        assert!(
            slow.describe().contains("3.0x slower"),
            "{}",
            slow.describe()
        );
        let absurd = Pace::from_seconds(REFERENCE_EMULATED_SECONDS * 100.0);
        assert_eq!(absurd.factor, MAX_FACTOR);
    }

    #[test]
    fn the_calibration_starts_processes() {
        let t = calibration_seconds();
        assert!(t > 0.0 && t < 60.0, "{t}");
    }
}
