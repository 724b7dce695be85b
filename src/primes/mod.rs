//! The N-th prime, fast and in bounded memory, for the workers behind the balancer.
//!
//! p_N is found in three steps: guess it closely (`estimate`: li inverted, within
//! about sqrt(p_N)), count the primes up to the guess exactly (`lmo`: Meissel-Lehmer
//! in the Lagarias-Miller-Odlyzko form, O(x^(2/3)) time), then sieve the short
//! stretch between the guess and p_N in small windows (`sieve`), forward or backward.
//! Nothing ever holds a table the size of p_N: the whole process stays under 3 MB at
//! N = 10^10. `lucy` (tests only) is an independent, simpler prime count that `lmo`
//! is checked against. [`parse_n`] is the gate for user input and [`NthPrimeCache`]
//! answers repeats without recomputing.
//!
//! Release-build times on the 2-core dev machine (`cargo bench --bench primes`):
//! N = 10^8 in ~2.5 ms, 10^9 in ~13 ms, 10^10 in ~60 ms, a cached repeat in ~13 ns.

mod cache;
mod estimate;
mod lmo;
#[cfg(test)]
mod lucy;
mod parse;
mod sieve;

pub use cache::NthPrimeCache;
pub use parse::{parse_n, BadN};

/// The default largest N a worker answers (SPEC `--max-n`).
pub const MAX_N: u64 = 10_000_000_000;

/// The largest N [`nth_prime`] is verified for: p(10^11) = 2760727302517 is a unit
/// test (about 0.3 s in a release build). Ten times the default `MAX_N`, so that an
/// operator may raise `--max-n` without leaving tested ground.
pub const MAX_SUPPORTED_N: u64 = 100_000_000_000;

/// The largest x [`prime_count`] accepts: a little above p(MAX_SUPPORTED_N), so that
/// the estimate and the walk from it stay in range. pi(10^12) is a unit test.
pub(crate) const MAX_SUPPORTED_X: u64 = 3_000_000_000_000;

/// Below this N the estimate is not worth it: sieve up from 2.
const DIRECT_BELOW_N: u64 = 100;

/// p_n, the n-th prime (p_1 = 2). Panics unless 1 <= n <= [`MAX_SUPPORTED_N`]:
/// callers validate user input with [`parse_n`] first.
pub fn nth_prime(n: u64) -> u64 {
    assert!(
        (1..=MAX_SUPPORTED_N).contains(&n),
        "nth_prime: n = {n} is outside 1..={MAX_SUPPORTED_N}"
    );
    if n < DIRECT_BELOW_N {
        return sieve::nth_prime_above(0, n);
    }
    let guess = estimate::nth_prime_estimate(n);
    let primes_to_guess = prime_count(guess);
    if primes_to_guess < n {
        sieve::nth_prime_above(guess, n - primes_to_guess)
    } else {
        sieve::nth_prime_at_or_below(guess, primes_to_guess - n + 1)
    }
}

/// pi(x), the number of primes `<= x`. Panics if x > [`MAX_SUPPORTED_X`].
pub(crate) fn prime_count(x: u64) -> u64 {
    assert!(
        x <= MAX_SUPPORTED_X,
        "prime_count: x = {x} is above {MAX_SUPPORTED_X}"
    );
    lmo::prime_count(x)
}

#[cfg(test)]
mod tests;
