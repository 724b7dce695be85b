//! The sieve of Eratosthenes in its two bounded-memory shapes: `small_primes` for the
//! sieving primes (up to a square root, so at most ~1.7 million numbers), and
//! `Window`, which sieves one cache-sized slice of the odd numbers at a time so that
//! walking from an estimate to p_N, or counting primes up to x^(2/3), never needs
//! memory proportional to the range.

/// Odd numbers per window: 2^18 bits = 32 KiB, a typical L1 data cache, so the
/// crossing-off loops stay in cache.
pub(crate) const WINDOW_ODDS: u64 = 1 << 18;

/// Every prime `<= limit`, ascending (2 included).
pub(crate) fn small_primes(limit: u64) -> Vec<u32> {
    assert!(limit < u64::from(u32::MAX), "sieving primes are u32");
    let limit = limit as usize;
    if limit < 2 {
        return Vec::new();
    }
    // is_composite[i] is about the odd number 2i + 1.
    let mut is_composite = vec![false; limit / 2 + 1];
    let mut p = 3;
    while p * p <= limit {
        if !is_composite[p / 2] {
            for multiple in (p * p..=limit).step_by(2 * p) {
                is_composite[multiple / 2] = true;
            }
        }
        p += 2;
    }
    let odd_primes = (1..=(limit - 1) / 2).filter(|&i| !is_composite[i]);
    std::iter::once(2)
        .chain(odd_primes.map(|i| (2 * i + 1) as u32))
        .collect()
}

/// The odd primes in `[lo, hi)`, as one bit per odd number. 2 is even and never in a
/// window: callers count it themselves.
pub(crate) struct Window {
    /// `lo` rounded down to even: bit i stands for `base + 2i + 1`.
    base: u64,
    hi: u64,
    bits: Vec<u64>,
}

impl Window {
    pub(crate) fn new() -> Self {
        Window {
            base: 0,
            hi: 0,
            bits: Vec::with_capacity((WINDOW_ODDS / 64) as usize),
        }
    }

    /// Sieves `[lo, hi)`, which must hold at most `2 * WINDOW_ODDS` numbers, with
    /// `primes` holding every prime up to the square root of `hi - 1`.
    pub(crate) fn sieve(&mut self, lo: u64, hi: u64, primes: &[u32]) {
        assert!(lo <= hi && hi - lo <= 2 * WINDOW_ODDS, "window too large");
        self.base = lo & !1;
        self.hi = hi;
        let odds = (hi - self.base) / 2;
        self.bits.clear();
        self.bits.resize(odds.div_ceil(64) as usize, u64::MAX);
        if !odds.is_multiple_of(64) {
            let last = self.bits.len() - 1;
            self.bits[last] = (1u64 << (odds % 64)) - 1;
        }
        for &p in primes.iter().skip(1) {
            let p = u64::from(p);
            if p * p >= hi {
                break;
            }
            self.cross_off(p, odds);
        }
        if self.base == 0 && odds > 0 {
            self.bits[0] &= !1; // 1 is not prime
        }
    }

    /// Clears the odd multiples of `p` from `max(p^2, base)` on: smaller multiples
    /// have a smaller prime factor, and p itself is prime.
    fn cross_off(&mut self, p: u64, odds: u64) {
        let mut multiple = (self.base + 1).div_ceil(p) * p;
        if multiple.is_multiple_of(2) {
            multiple += p;
        }
        let mut bit = (multiple.max(p * p) - self.base - 1) / 2;
        while bit < odds {
            self.bits[(bit / 64) as usize] &= !(1u64 << (bit % 64));
            bit += p;
        }
    }

    /// Odd primes in the whole window.
    pub(crate) fn count(&self) -> u64 {
        self.bits.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Odd primes in the window that are `<= v` (v must be below `hi`).
    pub(crate) fn count_upto(&self, v: u64) -> u64 {
        debug_assert!(v < self.hi);
        if v <= self.base {
            return 0;
        }
        let odds = (v - self.base).div_ceil(2); // odd numbers in (base, v]
        let full = (odds / 64) as usize;
        let whole: u64 = self.bits[..full]
            .iter()
            .map(|w| u64::from(w.count_ones()))
            .sum();
        let rest = odds % 64;
        let partial = if rest == 0 {
            0
        } else {
            (self.bits[full] & ((1u64 << rest) - 1)).count_ones()
        };
        whole + u64::from(partial)
    }

    /// The k-th (1-based) odd prime of the window counting up, if it has k.
    pub(crate) fn nth(&self, k: u64) -> Option<u64> {
        let mut left = k;
        for (index, &word) in self.bits.iter().enumerate() {
            let ones = u64::from(word.count_ones());
            if left <= ones {
                let bit = select_bit(word, left - 1);
                return Some(self.base + 2 * (64 * index as u64 + bit) + 1);
            }
            left -= ones;
        }
        None
    }

    /// The k-th (1-based) odd prime of the window counting down from the top.
    pub(crate) fn nth_back(&self, k: u64) -> Option<u64> {
        let total = self.count();
        (k <= total && k >= 1)
            .then(|| self.nth(total - k + 1))
            .flatten()
    }
}

/// Position of the set bit of `word` that has `rank` set bits below it.
fn select_bit(mut word: u64, rank: u64) -> u64 {
    for _ in 0..rank {
        word &= word - 1;
    }
    u64::from(word.trailing_zeros())
}

/// The k-th prime above `x` (k >= 1), sieving upward window by window.
pub(crate) fn nth_prime_above(x: u64, k: u64) -> u64 {
    assert!(k >= 1);
    if x < 2 {
        if k == 1 {
            return 2;
        }
        return nth_prime_above(2, k - 1);
    }
    // The answer is far below 2x for the small k we are asked for; the assert in the
    // loop keeps that honest.
    let limit = 2 * x + 1000;
    let primes = small_primes(limit.isqrt());
    let mut window = Window::new();
    let (mut lo, mut left) = (x + 1, k);
    loop {
        let hi = (lo + 2 * WINDOW_ODDS).min(limit);
        assert!(lo < hi, "no {k}-th prime above {x} below {limit}");
        window.sieve(lo, hi, &primes);
        if let Some(p) = window.nth(left) {
            return p;
        }
        left -= window.count();
        lo = hi;
    }
}

/// The k-th prime at or below `x` counting down (k = 1 gives the largest prime
/// `<= x`). The caller guarantees there are at least k primes `<= x`.
pub(crate) fn nth_prime_at_or_below(x: u64, k: u64) -> u64 {
    assert!(k >= 1);
    let primes = small_primes((x + 1).isqrt());
    let mut window = Window::new();
    let (mut hi, mut left) = (x + 1, k);
    while hi > 3 {
        let lo = hi.saturating_sub(2 * WINDOW_ODDS).max(3);
        window.sieve(lo, hi, &primes);
        if let Some(p) = window.nth_back(left) {
            return p;
        }
        left -= window.count();
        hi = lo;
    }
    assert!(left == 1, "fewer than {k} primes at or below {x}");
    2
}

/// pi(x) by sieving every window up to x: linear time, for small x only.
pub(crate) fn count_primes_by_sieve(x: u64) -> u64 {
    let mut counter = AscendingPi::new(x);
    counter.pi(x)
}

/// pi(v) for a non-decreasing sequence of v up to a fixed limit, sieving each window
/// once: the P2 sum of Meissel-Lehmer asks for pi(x/p) with x/p rising.
pub(crate) struct AscendingPi {
    primes: Vec<u32>,
    window: Window,
    /// The largest v asked about: no window reaches past it.
    limit: u64,
    /// The current window is `[lo, hi)`; `primes_below_lo` counts 2 as well.
    lo: u64,
    hi: u64,
    primes_below_lo: u64,
}

impl AscendingPi {
    pub(crate) fn new(limit: u64) -> Self {
        AscendingPi {
            primes: small_primes(limit.isqrt() + 1),
            window: Window::new(),
            limit,
            lo: 0,
            hi: 0,
            primes_below_lo: 0,
        }
    }

    pub(crate) fn pi(&mut self, v: u64) -> u64 {
        assert!(v + 1 >= self.lo, "pi queries must not go down");
        assert!(
            v <= self.limit,
            "pi({v}) asked of a counter built for {}",
            self.limit
        );
        while v >= self.hi {
            self.primes_below_lo += self.window.count();
            self.lo = self.hi;
            self.hi = (self.lo + 2 * WINDOW_ODDS).min(self.limit + 1);
            self.window.sieve(self.lo, self.hi, &self.primes);
        }
        let two = u64::from(v >= 2);
        self.primes_below_lo + self.window.count_upto(v) + two
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plainest possible sieve, as the oracle.
    fn is_prime_table(limit: usize) -> Vec<bool> {
        let mut is_prime = vec![true; limit + 1];
        is_prime[0] = false;
        if limit >= 1 {
            is_prime[1] = false;
        }
        for i in 2..=limit {
            if is_prime[i] {
                for j in (i * i..=limit).step_by(i) {
                    is_prime[j] = false;
                }
            }
        }
        is_prime
    }

    #[test]
    fn small_primes_matches_plain_sieve() {
        let table = is_prime_table(10_000);
        for limit in [0u64, 1, 2, 3, 4, 9, 10, 11, 100, 9_999, 10_000] {
            let expected: Vec<u32> = (0..=limit as usize)
                .filter(|&i| table[i])
                .map(|i| i as u32)
                .collect();
            assert_eq!(small_primes(limit), expected, "limit {limit}");
        }
    }

    #[test]
    fn window_counts_match_plain_sieve_across_window_edges() {
        let limit = 3 * 2 * WINDOW_ODDS as usize + 100;
        let table = is_prime_table(limit);
        let primes = small_primes(2000);
        let mut window = Window::new();
        for (lo, hi) in [
            (0, 10),
            (1, 2),
            (2, 3),
            (3, 4),
            (0, 2 * WINDOW_ODDS),
            (999, 1234),
        ] {
            window.sieve(lo, hi, &primes);
            let odd = (lo..hi).filter(|&v| v != 2 && table[v as usize]).count() as u64;
            assert_eq!(window.count(), odd, "[{lo}, {hi})");
            for v in lo..hi.min(lo + 300) {
                let upto = (lo..=v).filter(|&u| u != 2 && table[u as usize]).count() as u64;
                assert_eq!(window.count_upto(v), upto, "[{lo}, {hi}) upto {v}");
            }
        }
    }

    #[test]
    fn ascending_pi_matches_plain_sieve_at_every_point_near_window_edges() {
        let limit = 5 * 2 * WINDOW_ODDS;
        let table = is_prime_table(limit as usize);
        let mut pi = vec![0u64; table.len()];
        for i in 1..table.len() {
            pi[i] = pi[i - 1] + u64::from(table[i]);
        }
        let mut counter = AscendingPi::new(limit);
        let edge = 2 * WINDOW_ODDS;
        for v in (0..limit).filter(|v| v % edge < 40 || v % edge > edge - 40 || v % 997 == 0) {
            assert_eq!(counter.pi(v), pi[v as usize], "pi({v})");
        }
    }

    #[test]
    fn walks_find_neighbouring_primes_both_ways() {
        assert_eq!(nth_prime_above(0, 1), 2);
        assert_eq!(nth_prime_above(0, 3), 5);
        assert_eq!(nth_prime_above(2, 1), 3);
        assert_eq!(nth_prime_above(104_728, 1), 104_729);
        assert_eq!(nth_prime_above(104_729, 1), 104_743); // the 10001st prime
        assert_eq!(nth_prime_at_or_below(104_729, 1), 104_729);
        assert_eq!(nth_prime_at_or_below(104_742, 1), 104_729);
        assert_eq!(nth_prime_at_or_below(10, 4), 2);
        assert_eq!(nth_prime_at_or_below(2, 1), 2);
        // Far enough to cross several windows in each direction.
        let table = is_prime_table(3_000_000);
        let primes: Vec<u64> = (0..table.len() as u64)
            .filter(|&i| table[i as usize])
            .collect();
        let start = primes.partition_point(|&p| p <= 2_000_000);
        assert_eq!(nth_prime_above(2_000_000, 50_000), primes[start + 49_999]);
        assert_eq!(
            nth_prime_at_or_below(2_000_000, 100_000),
            primes[start - 100_000]
        );
    }
}
