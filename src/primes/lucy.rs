//! Lucy_Hedgehog's prime count in O(x^(3/4)) time and O(sqrt x) memory: a dynamic
//! programme over the values floor(x/k), removing the multiples of one prime at a
//! time. It is short enough to check by eye, which makes it the independent oracle
//! the faster Meissel-Lehmer code is tested against at sizes no plain sieve reaches.

/// pi(x), the number of primes `<= x`.
pub(crate) fn prime_count(x: u64) -> u64 {
    if x < 2 {
        return 0;
    }
    let root = x.isqrt();
    let r = root as usize;
    // small[v] and large[k] count the integers in 2..=v and 2..=x/k that survive the
    // primes removed so far; at the end only primes survive.
    let mut small: Vec<u64> = (0..=root).map(|v| v.saturating_sub(1)).collect();
    let mut large: Vec<u64> = (0..=root)
        .map(|k| (x / k.max(1)).saturating_sub(1))
        .collect();
    for p in 2..=r {
        if small[p] == small[p - 1] {
            continue; // p is composite
        }
        let below_p = small[p - 1];
        let p = p as u64;
        let p_squared = p * p;
        let k_max = root.min(x / p_squared);
        for k in 1..=k_max {
            let d = k * p;
            let over_p = if d <= root {
                large[d as usize]
            } else {
                small[(x / d) as usize]
            };
            large[k as usize] -= over_p - below_p;
        }
        for v in (p_squared..=root).rev() {
            small[v as usize] -= small[(v / p) as usize] - below_p;
        }
    }
    large[1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_known_values() {
        assert_eq!(prime_count(0), 0);
        assert_eq!(prime_count(1), 0);
        assert_eq!(prime_count(2), 1);
        assert_eq!(prime_count(3), 2);
        assert_eq!(prime_count(4), 2);
        assert_eq!(prime_count(100), 25);
        assert_eq!(prime_count(1_000_000), 78_498);
        assert_eq!(prime_count(10_000_000_000), 455_052_511);
    }
}
