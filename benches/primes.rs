//! Time to compute p_N from scratch for N = 10^6 .. 10^10 (estimate, exact prime
//! count, windowed walk), and to answer a repeated N from `NthPrimeCache`.
//!
//! Each N runs several times (fewer for the large ones) and the table shows the
//! median and the fastest run; the machine is shared, so the median is the number to
//! quote and the minimum shows what the code can do undisturbed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use raftlb::primes::{nth_prime, NthPrimeCache};

/// (N, runs)
const CASES: [(u64, usize); 5] = [
    (1_000_000, 21),
    (10_000_000, 15),
    (100_000_000, 11),
    (1_000_000_000, 7),
    (10_000_000_000, 5),
];

/// Lookups timed for the cached repeat, to measure something above the clock's grain.
const CACHED_LOOKUPS: u32 = 100_000;

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn time_once(n: u64) -> (Duration, u64) {
    let started = Instant::now();
    let p = black_box(nth_prime(black_box(n)));
    (started.elapsed(), p)
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn main() {
    println!("nth_prime from scratch, single thread");
    println!(
        "{:<16} {:>16} {:>6} {:>12} {:>12}",
        "N", "p_N", "runs", "median ms", "min ms"
    );
    for (n, runs) in CASES {
        let timings: Vec<(Duration, u64)> = (0..runs).map(|_| time_once(n)).collect();
        let p = timings[0].1;
        let durations: Vec<Duration> = timings.iter().map(|t| t.0).collect();
        let fastest = durations.iter().min().copied().unwrap_or_default();
        println!(
            "{:<16} {:>16} {:>6} {:>12.3} {:>12.3}",
            n,
            p,
            runs,
            millis(median(durations)),
            millis(fastest)
        );
    }

    let cache = NthPrimeCache::new(256);
    let n = 1_000_000_000;
    cache.get_or_compute(n);
    let started = Instant::now();
    for _ in 0..CACHED_LOOKUPS {
        black_box(cache.get_or_compute(black_box(n)));
    }
    let per_lookup = started.elapsed() / CACHED_LOOKUPS;
    println!(
        "cached repeat of N = {n}: {:.3} us per lookup (mean of {CACHED_LOOKUPS})",
        per_lookup.as_secs_f64() * 1e6
    );
}
