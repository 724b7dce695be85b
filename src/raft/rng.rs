//! A tiny seeded random number generator (SplitMix64) for election timeouts.
//!
//! The core takes no randomness from the environment: the caller passes a seed, so
//! a simulated run replays exactly from its seed.

/// SplitMix64: small, fast, and good enough to spread election timeouts.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// Generator number `stream` of `seed`, for several generators from one
    /// seed (one per client thread, say). Both are hashed into the start: two
    /// starts that differ by a multiple of the step would be one sequence
    /// shifted (`seed ^ stream x step`, with a small seed, is often that: stream
    /// k + 1 repeated stream k one draw later).
    pub fn derived(seed: u64, stream: u64) -> Rng {
        let hashed = Rng::new(seed).next_u64();
        Rng::new(Rng::new(hashed ^ stream).next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `low..high` (`low` when the range is empty).
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        low + self.next_u64() % (high - low)
    }

    /// True with probability `numerator / denominator`.
    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        denominator > 0 && self.next_u64() % denominator < numerator
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_same_sequence() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn derived_generators_do_not_repeat_each_other() {
        // Each stream's first 1,000 draws, for 100 streams of a small seed:
        // no draw is seen twice (shifted copies would repeat thousands).
        let mut seen = std::collections::HashSet::new();
        for stream in 0..100 {
            let mut rng = Rng::derived(13, stream);
            for _ in 0..1000 {
                assert!(
                    seen.insert(rng.next_u64()),
                    "stream {stream} repeats a draw"
                );
            }
        }
        assert_ne!(
            Rng::derived(13, 0).next_u64(),
            Rng::derived(14, 0).next_u64()
        );
    }

    #[test]
    fn range_stays_inside_its_bounds() {
        let mut rng = Rng::new(1);
        for _ in 0..10_000 {
            let v = rng.range(15, 30);
            assert!((15..30).contains(&v));
        }
        assert_eq!(rng.range(5, 5), 5);
    }
}
