//! `raftlb bench prime --costly-n LO-HI`: a mixed stream of N, most cheap, a
//! share costly, drawn from a seed so that every system of a benchmark is sent
//! the same requests.
//!
//! Each client thread draws from a generator of its own (the seed and its
//! index), so a thread's sequence does not depend on how the others are
//! served. Both ranges are drawn log-uniformly: the worker's time grows about
//! as N^(2/3), so the costs spread evenly over their range's orders of
//! magnitude. `offset` is added to every N: the same costs, other Ns, so that
//! a worker's cache of an earlier run's answers does not answer this run's.

use crate::raft::Rng;

/// An inclusive range of N, `LO-HI` on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NRange {
    pub lo: u64,
    pub hi: u64,
}

impl NRange {
    /// Parses `LO-HI` (1 <= LO <= HI <= max_n); a one-line reason otherwise.
    pub fn parse(text: &str, max_n: u64) -> Result<NRange, BadRange> {
        let bad = || BadRange {
            text: text.to_string(),
            max_n,
        };
        let (lo, hi) = text.split_once('-').ok_or_else(bad)?;
        let lo: u64 = lo.trim().parse().map_err(|_| bad())?;
        let hi: u64 = hi.trim().parse().map_err(|_| bad())?;
        if lo == 0 || lo > hi || hi > max_n {
            return Err(bad());
        }
        Ok(NRange { lo, hi })
    }

    /// A log-uniform draw in the range.
    fn draw(self, rng: &mut Rng) -> u64 {
        let (lo, hi) = (self.lo as f64, self.hi as f64);
        let n = lo * (hi / lo).powf(unit(rng));
        (n.round() as u64).clamp(self.lo, self.hi)
    }
}

/// A range that is not `LO-HI` with 1 <= LO <= HI <= `max_n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRange {
    pub text: String,
    pub max_n: u64,
}

impl std::fmt::Display for BadRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let BadRange { text, max_n } = self;
        write!(
            f,
            "{text:?}: expected LO-HI, two N with 1 <= LO <= HI <= {max_n}"
        )
    }
}

impl std::error::Error for BadRange {}

/// The mixed stream's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    pub cheap: NRange,
    pub costly: NRange,
    /// Costly requests per thousand.
    pub costly_per_mille: u64,
    pub seed: u64,
    /// Added to every N drawn.
    pub offset: u64,
}

/// One client thread's N, in the order it sends them.
pub(crate) struct Stream {
    mix: Mix,
    rng: Rng,
}

impl Stream {
    /// Thread `thread`'s stream: a generator of its own, not a shifted copy
    /// of another thread's (with `seed ^ thread x step` thread k + 1 sent
    /// thread k's N one request later, answered from the worker's cache: most
    /// costly requests of a 100-thread open loop cost nothing).
    pub fn new(mix: Mix, thread: usize) -> Stream {
        Stream {
            mix,
            rng: Rng::derived(mix.seed, thread as u64),
        }
    }

    /// The next N, and whether it was drawn from the costly range.
    pub(crate) fn next_n(&mut self) -> (u64, bool) {
        let costly = self.rng.chance(self.mix.costly_per_mille, 1000);
        let range = if costly {
            self.mix.costly
        } else {
            self.mix.cheap
        };
        (
            range.draw(&mut self.rng).saturating_add(self.mix.offset),
            costly,
        )
    }
}

/// A uniform draw in [0, 1).
fn unit(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix(offset: u64) -> Mix {
        Mix {
            cheap: NRange {
                lo: 1000,
                hi: 100_000,
            },
            costly: NRange {
                lo: 300_000_000,
                hi: 1_000_000_000,
            },
            costly_per_mille: 100,
            seed: 7,
            offset,
        }
    }

    #[test]
    fn a_tenth_is_costly_and_every_n_is_in_its_range() {
        let mut stream = Stream::new(mix(0), 0);
        let pairs: Vec<(u64, bool)> = (0..10_000).map(|_| stream.next_n()).collect();
        assert!(
            pairs
                .iter()
                .all(|(n, costly)| *costly == (*n >= 300_000_000)),
            "the flag says which range each N came from"
        );
        let draws: Vec<u64> = pairs.iter().map(|(n, _)| *n).collect();
        let costly = draws.iter().filter(|n| **n >= 300_000_000).count();
        assert!((800..1200).contains(&costly), "{costly} costly of 10,000");
        assert!(draws
            .iter()
            .all(|n| (1000..=100_000).contains(n) || (300_000_000..=1_000_000_000).contains(n)));
        // Log-uniform: about half the cheap ones below the geometric middle.
        let low = draws.iter().filter(|n| **n < 10_000).count();
        assert!((3800..5200).contains(&low), "{low} below 10,000");
    }

    #[test]
    fn threads_do_not_send_each_others_n() {
        // All costly, from a range of 7e8 values: 100 threads x 200 draws
        // would repeat an N by chance about once in ten runs; shifted copies
        // of one stream repeat most of them.
        let all_costly = Mix {
            costly_per_mille: 1000,
            ..mix(0)
        };
        let mut seen = std::collections::HashSet::new();
        let mut repeats = 0;
        for thread in 0..100 {
            let mut stream = Stream::new(all_costly, thread);
            for _ in 0..200 {
                repeats += usize::from(!seen.insert(stream.next_n().0));
            }
        }
        assert!(repeats <= 2, "{repeats} N sent twice");
    }

    #[test]
    fn the_same_seed_and_thread_give_the_same_stream_and_the_offset_shifts_it() {
        let take = |mix: Mix, thread| {
            let mut s = Stream::new(mix, thread);
            (0..100).map(|_| s.next_n().0).collect::<Vec<u64>>()
        };
        assert_eq!(take(mix(0), 3), take(mix(0), 3));
        assert_ne!(take(mix(0), 3), take(mix(0), 4));
        let shifted: Vec<u64> = take(mix(0), 3).iter().map(|n| n + 5).collect();
        assert_eq!(take(mix(5), 3), shifted);
    }

    #[test]
    fn ranges_parse_as_lo_dash_hi_within_max_n() {
        assert_eq!(NRange::parse("10-20", 100), Ok(NRange { lo: 10, hi: 20 }));
        assert_eq!(NRange::parse("5-5", 100), Ok(NRange { lo: 5, hi: 5 }));
        for bad in ["", "10", "20-10", "0-5", "1-101", "a-b", "1-2-3"] {
            let e = NRange::parse(bad, 100).expect_err(bad).to_string();
            assert!(e.contains("LO-HI") && !e.contains('\n'), "{e}");
        }
    }
}
