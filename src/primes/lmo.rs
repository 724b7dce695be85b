//! pi(x) by the Meissel-Lehmer method in the form of Lagarias, Miller and Odlyzko
//! (LMO, 1985): O(x^(2/3)) time and O(x^(1/2)) memory (the primes up to sqrt x, a
//! few hundred KB at x = 2.5e11), where Lucy_Hedgehog needs O(x^(3/4)) time.
//!
//! With y >= x^(1/3) and a = pi(y), every integer <= x without a prime factor <= y is
//! 1, a prime, or a product of two primes above y, so
//!     pi(x) = phi(x, a) + a - 1 - P2(x, a)
//! where phi(x, a) counts the integers <= x with no prime factor among the first a
//! primes and P2 counts the products of two primes above y. Expanding phi with
//! phi(v, b) = phi(v, b - 1) - phi(v / p_b, b - 1) until the divisor n exceeds y leaves
//! "ordinary" leaves mu(n) * floor(x / n) for n <= y and "special" leaves
//!     -mu(m) * phi(x / (m p_b), b - 1)   with m <= y < m p_b, lpf(m) > p_b,
//! whose arguments are all below x / y. Those are answered by sieving [1, x / y] in
//! cache-sized segments, one prime at a time, counting the survivors: after crossing
//! off p_1 .. p_(b-1), the survivors <= v number exactly phi(v, b - 1).

use super::sieve::{small_primes, AscendingPi};

/// Numbers per segment of the special-leaf sieve: 2^18 bits = 32 KiB, an L1 cache.
const SEGMENT_LEN: u64 = 1 << 18;

/// y = Y_FACTOR * x^(1/3): a larger y shrinks the sieved range x / y but adds special
/// leaves (about pi(y)^2 / 2 of them). Tuned by `cargo bench --bench primes`.
const Y_FACTOR: u64 = 4;

/// pi(x), the number of primes `<= x`.
pub(crate) fn prime_count(x: u64) -> u64 {
    if x < 16 {
        return super::sieve::count_primes_by_sieve(x);
    }
    let y = (Y_FACTOR * cube_root(x)).min(x.isqrt());
    let primes = small_primes(x.isqrt());
    let a = primes.partition_point(|&p| u64::from(p) <= y);
    let (least_factor, mobius) = factor_tables(y);
    let phi =
        ordinary_leaves(x, y, &mobius) + special_leaves(x, y, &primes[..a], &least_factor, &mobius);
    let phi = u64::try_from(phi).expect("phi(x, a) counts integers, so is not negative");
    phi + a as u64 - 1 - p2(x, y, &primes, a)
}

/// floor(x^(1/3)).
fn cube_root(x: u64) -> u64 {
    let mut root = (x as f64).cbrt() as u64;
    while root * root * root > x {
        root -= 1;
    }
    while (root + 1) * (root + 1) * (root + 1) <= x {
        root += 1;
    }
    root
}

/// For n <= limit: the least prime factor (u32::MAX for 1, so that "lpf(1) > p" holds
/// for every p) and the Moebius function.
fn factor_tables(limit: u64) -> (Vec<u32>, Vec<i8>) {
    let len = limit as usize + 1;
    let mut least_factor = vec![u32::MAX; len];
    let mut mobius = vec![1i8; len];
    for p in 2..len {
        if least_factor[p] != u32::MAX {
            continue; // composite: its factors were handled already
        }
        for multiple in (p..len).step_by(p) {
            least_factor[multiple] = least_factor[multiple].min(p as u32);
            mobius[multiple] = -mobius[multiple];
        }
        for multiple in (p * p..len).step_by(p * p) {
            mobius[multiple] = 0;
        }
    }
    (least_factor, mobius)
}

/// Sum of mu(n) * floor(x / n) over n <= y.
fn ordinary_leaves(x: u64, y: u64, mobius: &[i8]) -> i64 {
    (1..=y)
        .map(|n| i64::from(mobius[n as usize]) * (x / n) as i64)
        .sum()
}

/// P2(x, a): the integers <= x that are a product of two primes above y, as the sum
/// over primes y < p <= sqrt x of (pi(x / p) - pi(p) + 1).
fn p2(x: u64, y: u64, primes: &[u32], a: usize) -> u64 {
    let mut counter = AscendingPi::new(x / (y + 1));
    let mut sum = 0;
    // Descending p gives ascending x / p, the order the counter needs.
    for (index, &p) in primes.iter().enumerate().skip(a).rev() {
        let pi_p = index as u64 + 1;
        sum += counter.pi(x / u64::from(p)) - pi_p + 1;
    }
    sum
}

/// The sum of all special leaves, sieving [1, x / y] segment by segment.
fn special_leaves(x: u64, y: u64, primes: &[u32], least_factor: &[u32], mobius: &[i8]) -> i64 {
    let z = x / y;
    let mut segment = Segment::new();
    let mut leaves = PrimeLeaves::new(x, y, primes, least_factor, mobius);
    // b (0-based here) only matters while its leaves, all below x / p_b^2, can still
    // lie in the segment; that bound falls with b, so the live b are a prefix.
    let mut live = primes.len();
    let mut sum = 0;
    let mut low = 1;
    while low <= z {
        let high = (low + SEGMENT_LEN).min(z + 1);
        while live > 0 && x / (u64::from(primes[live - 1]).pow(2)) < low {
            live -= 1;
        }
        segment.reset(low, high);
        for b in 0..live {
            // The segment now holds the integers free of p_1 .. p_(b-1).
            sum += leaves.answer_in_segment(b, &segment, high);
            leaves.phi_below[b] += segment.count_all();
            segment.cross_off(u64::from(primes[b]));
        }
        low = high;
    }
    sum
}

/// The special leaves, grouped by their prime p_b and walked in ascending order of
/// their argument x / (m p_b), i.e. descending m.
struct PrimeLeaves<'a> {
    x: u64,
    y: u64,
    primes: &'a [u32],
    least_factor: &'a [u32],
    mobius: &'a [i8],
    /// phi(low - 1, b - 1) for the current segment's low, per b.
    phi_below: Vec<u64>,
    /// The next m to try, per b: an m value when p_b^2 <= y (m may be composite),
    /// else an index into `primes` (m can only be a prime above p_b).
    cursor: Vec<u64>,
}

impl<'a> PrimeLeaves<'a> {
    fn new(x: u64, y: u64, primes: &'a [u32], least_factor: &'a [u32], mobius: &'a [i8]) -> Self {
        let cursor = primes
            .iter()
            .map(|&p| {
                if u64::from(p).pow(2) <= y {
                    y
                } else {
                    primes.len() as u64 - 1
                }
            })
            .collect();
        PrimeLeaves {
            x,
            y,
            primes,
            least_factor,
            mobius,
            phi_below: vec![0; primes.len()],
            cursor,
        }
    }

    /// The sum of the leaves of p_b whose argument lies in the segment (below `high`),
    /// moving b's cursor past them.
    fn answer_in_segment(&mut self, b: usize, segment: &Segment, high: u64) -> i64 {
        let p = u64::from(self.primes[b]);
        let x_over_p = self.x / p;
        let phi_below = self.phi_below[b];
        let mut counter = PrefixCount::default();
        let mut sum = 0i64;
        if p * p <= self.y {
            let m_min = self.y / p; // leaves need m p > y
            let mut m = self.cursor[b];
            while m > m_min {
                let (factor, mu) = (self.least_factor[m as usize], self.mobius[m as usize]);
                if mu != 0 && u64::from(factor) > p {
                    let v = x_over_p / m;
                    if v >= high {
                        break;
                    }
                    let phi = (phi_below + counter.upto(segment, v)) as i64;
                    sum -= i64::from(mu) * phi;
                }
                m -= 1;
            }
            self.cursor[b] = m;
        } else {
            let mut index = self.cursor[b];
            // m = q, a prime with p < q <= y; mu(q) = -1.
            while index > b as u64 {
                let v = x_over_p / u64::from(self.primes[index as usize]);
                if v >= high {
                    break;
                }
                sum += (phi_below + counter.upto(segment, v)) as i64;
                index -= 1;
            }
            self.cursor[b] = index;
        }
        sum
    }
}

/// One segment [low, high) of the special-leaf sieve, a bit per integer.
struct Segment {
    low: u64,
    high: u64,
    bits: Vec<u64>,
}

impl Segment {
    fn new() -> Self {
        Segment {
            low: 0,
            high: 0,
            bits: Vec::with_capacity((SEGMENT_LEN / 64) as usize),
        }
    }

    /// Every integer of [low, high) present.
    fn reset(&mut self, low: u64, high: u64) {
        let len = high - low;
        self.low = low;
        self.high = high;
        self.bits.clear();
        self.bits.resize(len.div_ceil(64) as usize, u64::MAX);
        if !len.is_multiple_of(64) {
            let last = self.bits.len() - 1;
            self.bits[last] = (1u64 << (len % 64)) - 1;
        }
    }

    /// Removes the multiples of p (p itself included).
    fn cross_off(&mut self, p: u64) {
        let len = self.high - self.low;
        let mut index = self.low.div_ceil(p) * p - self.low;
        while index < len {
            self.bits[(index / 64) as usize] &= !(1u64 << (index % 64));
            index += p;
        }
    }

    fn count_all(&self) -> u64 {
        self.bits.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

/// Counts the integers present in a segment up to v, for rising v, adding up whole
/// words only once: the leaves of one prime arrive in ascending order.
#[derive(Default)]
struct PrefixCount {
    /// Words [0, words_done) are summed in `count`.
    words_done: usize,
    count: u64,
}

impl PrefixCount {
    fn upto(&mut self, segment: &Segment, v: u64) -> u64 {
        debug_assert!(segment.low <= v && v < segment.high);
        let index = v - segment.low;
        let word = (index / 64) as usize;
        while self.words_done < word {
            self.count += u64::from(segment.bits[self.words_done].count_ones());
            self.words_done += 1;
        }
        let mask = u64::MAX >> (63 - index % 64);
        self.count + u64::from((segment.bits[word] & mask).count_ones())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cube_root_is_exact_at_cubes_and_their_neighbours() {
        for root in [1u64, 2, 3, 10, 1000, 14_000, 2_000_000] {
            let cube = root * root * root;
            assert_eq!(cube_root(cube), root);
            assert_eq!(cube_root(cube - 1), root - 1);
            assert_eq!(cube_root(cube + 1), root);
        }
    }

    #[test]
    fn factor_tables_give_least_factor_and_mobius() {
        let (least_factor, mobius) = factor_tables(30);
        assert_eq!(least_factor[1], u32::MAX);
        assert_eq!(&least_factor[2..=10], &[2, 3, 2, 5, 2, 7, 2, 3, 2]);
        assert_eq!(least_factor[29], 29);
        assert_eq!(&mobius[1..=12], &[1, -1, -1, 0, -1, 1, -1, 0, 0, 1, -1, 0]);
        assert_eq!(mobius[30], -1);
    }

    #[test]
    fn matches_plain_sieve_for_every_x_up_to_100k() {
        let mut is_prime = vec![true; 100_001];
        let mut pi = 0;
        for x in 0..is_prime.len() {
            if x < 2 {
                is_prime[x] = false;
            } else if is_prime[x] {
                pi += 1;
                for multiple in (x * x..is_prime.len()).step_by(x) {
                    is_prime[multiple] = false;
                }
            }
            assert_eq!(prime_count(x as u64), pi, "pi({x})");
        }
    }

    #[test]
    fn matches_lucy_for_random_x_up_to_10_to_the_11() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for round in 0..60 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Spread over magnitudes: 10^5 .. 10^11.
            let x = state % 10u64.pow(5 + round % 7);
            assert_eq!(
                prime_count(x),
                super::super::lucy::prime_count(x),
                "pi({x})"
            );
        }
    }

    #[test]
    fn matches_known_values_at_powers_of_ten() {
        assert_eq!(prime_count(1_000_000_000), 50_847_534);
        assert_eq!(prime_count(100_000_000_000), 4_118_054_813);
        assert_eq!(prime_count(1_000_000_000_000), 37_607_912_018);
    }
}
