//! Per-link fault rules: what happens to frames going from one node to another.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Rules for one direction of a link (frames from `from` to `to`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkRule {
    /// Drop every frame.
    pub blocked: bool,
    /// Probability in 0.0..=1.0 that a frame is dropped.
    pub loss: f64,
    /// Time a frame is held before delivery.
    pub delay: Duration,
}

impl LinkRule {
    /// True when the rule changes nothing, so it need not be stored.
    pub fn is_clear(&self) -> bool {
        !self.blocked && self.loss == 0.0 && self.delay.is_zero()
    }
}

/// A random source for one directed link, seeded from the switch seed and the link's names so
/// that the loss pattern on a link depends only on the frames sent over it (replayable).
pub fn link_rng(seed: u64, from: &str, to: &str) -> StdRng {
    StdRng::seed_from_u64(seed ^ fnv1a(from.as_bytes().iter().chain(&[0]).chain(to.as_bytes())))
}

/// Draws whether a frame is lost with probability `loss`.
pub fn lose(rng: &mut StdRng, loss: f64) -> bool {
    loss > 0.0 && rng.random_bool(loss.min(1.0))
}

/// FNV-1a: a stable hash (std's hasher may change between releases; replays must not).
fn fnv1a<'a>(bytes: impl Iterator<Item = &'a u8>) -> u64 {
    bytes.fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_rngs_differ_per_direction_and_repeat_per_seed() {
        let draw = |mut r: StdRng| (0..64).map(|_| lose(&mut r, 0.5)).collect::<Vec<_>>();
        assert_eq!(draw(link_rng(1, "a", "b")), draw(link_rng(1, "a", "b")));
        assert_ne!(draw(link_rng(1, "a", "b")), draw(link_rng(1, "b", "a")));
        assert_ne!(draw(link_rng(1, "a", "b")), draw(link_rng(2, "a", "b")));
    }
}
