//! The N-th prime, fast and in bounded memory, for the workers behind the balancer.
//!
//! p_N is found in three steps: guess it closely (`estimate`), count the primes up to
//! the guess exactly with a sublinear prime-counting algorithm, then sieve the short
//! stretch between the guess and p_N window by window (`sieve`), forward or backward.
//! Nothing ever holds a table the size of p_N. [`parse_n`] is the gate for user
//! input and [`NthPrimeCache`] answers repeats without recomputing.

mod cache;
mod estimate;
mod lmo;
#[cfg(test)]
mod lucy;
mod parse;
mod sieve;

pub use cache::NthPrimeCache;
pub use parse::parse_n;

/// The default largest N a worker answers (SPEC `--max-n`).
pub const MAX_N: u64 = 10_000_000_000;

/// The largest N [`nth_prime`] is verified for: p(10^10) = 252097800623 is a unit
/// test.
pub const MAX_SUPPORTED_N: u64 = 10_000_000_000;

/// The largest x [`prime_count`] accepts: a little above p(MAX_SUPPORTED_N), so that
/// the estimate and the walk from it stay in range.
pub const MAX_SUPPORTED_X: u64 = 300_000_000_000;

/// Below this, pi(x) by plain segmented sieve is as fast as anything cleverer.
const SIEVE_COUNT_BELOW: u64 = 1 << 20;

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
pub fn prime_count(x: u64) -> u64 {
    assert!(
        x <= MAX_SUPPORTED_X,
        "prime_count: x = {x} is above {MAX_SUPPORTED_X}"
    );
    if x < SIEVE_COUNT_BELOW {
        sieve::count_primes_by_sieve(x)
    } else {
        lmo::prime_count(x)
    }
}

#[cfg(test)]
mod tests;
