//! The oracles for the public functions: known primes, a plain sieve for many small
//! x, and nth_prime(pi(p)) == p around the places where the algorithm switches paths.

use super::*;

/// The plainest possible sieve: is_prime[i] for i <= limit.
fn is_prime_table(limit: usize) -> Vec<bool> {
    let mut is_prime = vec![true; limit + 1];
    is_prime[0] = false;
    is_prime[1] = false;
    for i in 2..=limit.isqrt() {
        if is_prime[i] {
            for j in (i * i..=limit).step_by(i) {
                is_prime[j] = false;
            }
        }
    }
    is_prime
}

/// pi_table[x] = pi(x) for x <= limit.
fn pi_table(limit: usize) -> Vec<u64> {
    let mut running = 0;
    is_prime_table(limit)
        .into_iter()
        .map(|is_prime| {
            running += u64::from(is_prime);
            running
        })
        .collect()
}

/// A small deterministic generator (xorshift64*), so a failure replays exactly.
fn random_below(state: &mut u64, bound: u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
}

#[test]
fn nth_prime_matches_known_small_primes() {
    assert_eq!(nth_prime(1), 2);
    assert_eq!(nth_prime(2), 3);
    assert_eq!(nth_prime(3), 5);
    assert_eq!(nth_prime(99), 523);
    assert_eq!(nth_prime(100), 541);
    assert_eq!(nth_prime(10_000), 104_729);
}

#[test]
fn nth_prime_matches_known_values_up_to_10_to_the_8() {
    assert_eq!(nth_prime(1_000_000), 15_485_863);
    assert_eq!(nth_prime(10_000_000), 179_424_673);
    assert_eq!(nth_prime(100_000_000), 2_038_074_743);
}

#[test]
fn nth_prime_matches_known_value_at_10_to_the_9() {
    assert_eq!(nth_prime(1_000_000_000), 22_801_763_489);
}

#[test]
fn nth_prime_matches_known_value_at_10_to_the_10() {
    assert_eq!(nth_prime(10_000_000_000), 252_097_800_623);
}

#[test]
fn prime_count_matches_plain_sieve_for_every_x_up_to_100k() {
    let pi = pi_table(100_000);
    for (x, &expected) in pi.iter().enumerate() {
        assert_eq!(prime_count(x as u64), expected, "pi({x})");
    }
}

#[test]
fn prime_count_matches_plain_sieve_for_random_x_up_to_10_to_the_7() {
    let pi = pi_table(10_000_000);
    let mut state = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..200 {
        let x = random_below(&mut state, 10_000_000);
        assert_eq!(prime_count(x), pi[x as usize], "pi({x})");
    }
}

#[test]
fn nth_prime_inverts_prime_count_for_every_n_near_the_path_switches() {
    let limit = 4 * SIEVE_COUNT_BELOW as usize;
    let table = is_prime_table(limit);
    let primes: Vec<u64> = (0..=limit as u64).filter(|&i| table[i as usize]).collect();
    let near_switch = |n: usize| n.abs_diff(DIRECT_BELOW_N as usize) < 50;
    let pi_at_sieve_switch = primes.partition_point(|&p| p < SIEVE_COUNT_BELOW);
    for n in (1..primes.len()).filter(|&n| near_switch(n) || n.abs_diff(pi_at_sieve_switch) < 300) {
        assert_eq!(nth_prime(n as u64), primes[n - 1], "p({n})");
    }
}

#[test]
fn nth_prime_inverts_prime_count_for_random_n() {
    let mut state = 42;
    for _ in 0..20 {
        let n = 1 + random_below(&mut state, 100_000_000);
        let p = nth_prime(n);
        assert_eq!(prime_count(p), n, "pi(p({n}))");
        assert_eq!(prime_count(p - 1), n - 1, "p({n}) = {p} is prime");
    }
}

#[test]
#[should_panic(expected = "outside")]
fn nth_prime_refuses_zero() {
    nth_prime(0);
}

#[test]
#[should_panic(expected = "outside")]
fn nth_prime_refuses_n_above_supported_bound() {
    nth_prime(MAX_SUPPORTED_N + 1);
}
