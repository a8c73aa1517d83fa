//! Seeded random draws that are a pure function of (seed, rule, match number): each rule has
//! its own ChaCha stream and each match its own window of that stream, so a decision never
//! depends on what other rules or earlier matches drew, and a run replays exactly.

use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Words of the stream reserved for one match (enough for one draw per sector of the
/// largest request).
const WORDS_PER_MATCH: u128 = 1 << 20;

/// Who is drawing: picks the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// `block[i]`.
    Block(usize),
    /// `net[i]`.
    Net(usize),
    /// `vsock[i]`.
    Vsock(usize),
    /// Which unflushed blocks of disk `i` survive a power cut.
    PowerCut(usize),
}

impl Stream {
    fn id(self) -> u64 {
        let (kind, index) = match self {
            Stream::Block(i) => (1u64, i),
            Stream::Net(i) => (2, i),
            Stream::Vsock(i) => (3, i),
            Stream::PowerCut(i) => (4, i),
        };
        (kind << 56) | (index as u64 & ((1 << 56) - 1))
    }
}

/// The draws for one match of one rule.
pub struct Draw(ChaCha8Rng);

impl Draw {
    /// Positions the generator at match `match_no` of `stream` under `seed`.
    pub fn new(seed: u64, stream: Stream, match_no: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream.id());
        rng.set_word_pos(u128::from(match_no) * WORDS_PER_MATCH);
        Draw(rng)
    }

    /// True with probability `p` (exactly: 1.0 always, 0.0 never).
    pub fn chance(&mut self, p: f64) -> bool {
        if p >= 1.0 {
            return true;
        }
        // 53 random bits give a uniform float in [0, 1).
        let x = (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        x < p
    }

    /// A uniform number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        // Multiply-shift: unbiased enough for picking a bit, and never divides by zero.
        ((u128::from(self.0.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(seed: u64, stream: Stream, m: u64) -> Vec<u64> {
        let mut d = Draw::new(seed, stream, m);
        (0..8).map(|_| d.below(1 << 40)).collect()
    }

    #[test]
    fn draws_are_a_function_of_seed_stream_and_match() {
        assert_eq!(seq(7, Stream::Block(0), 3), seq(7, Stream::Block(0), 3));
        assert_ne!(seq(7, Stream::Block(0), 3), seq(8, Stream::Block(0), 3));
        assert_ne!(seq(7, Stream::Block(0), 3), seq(7, Stream::Block(1), 3));
        assert_ne!(seq(7, Stream::Block(0), 3), seq(7, Stream::Net(0), 3));
        assert_ne!(seq(7, Stream::Block(0), 3), seq(7, Stream::Block(0), 4));
    }

    #[test]
    fn chance_matches_probability() {
        let hits = (0..20_000)
            .filter(|m| Draw::new(1, Stream::Net(2), *m).chance(0.1))
            .count();
        assert!((1_700..2_300).contains(&hits), "{hits} of 20000 at p=0.1");
        assert!((0..100).all(|m| Draw::new(1, Stream::Net(2), m).chance(1.0)));
        assert!((0..100).all(|m| !Draw::new(1, Stream::Net(2), m).chance(0.0)));
    }

    #[test]
    fn below_stays_in_range() {
        let mut d = Draw::new(3, Stream::PowerCut(0), 0);
        for n in [1u64, 2, 7, 4096] {
            for _ in 0..100 {
                assert!(d.below(n) < n);
            }
        }
    }
}
