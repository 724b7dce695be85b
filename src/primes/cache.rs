//! A small least-recently-used cache of answers, because load-balanced clients ask
//! for the same popular N again and again, and a repeat should cost a lookup (well
//! under a millisecond), not another prime count. The lock guards only the lookup and
//! the insert, never the computation, so one slow N never blocks the others.

use std::sync::Mutex;

use crate::locks::lock;

/// Answers shared by every thread of a worker.
pub struct NthPrimeCache {
    capacity: usize,
    state: Mutex<Entries>,
}

/// A plain vector scanned linearly: at a few hundred entries that is a few hundred
/// nanoseconds, simpler than a hash map plus a linked list and just as fast here.
struct Entries {
    /// (n, p_n, when last used); at most `capacity` long.
    slots: Vec<(u64, u64, u64)>,
    /// A counter that stamps every use, to find the least recently used slot.
    clock: u64,
}

impl NthPrimeCache {
    /// A cache holding up to `capacity` answers (0 disables caching).
    pub fn new(capacity: usize) -> Self {
        NthPrimeCache {
            capacity,
            state: Mutex::new(Entries {
                slots: Vec::with_capacity(capacity),
                clock: 0,
            }),
        }
    }

    /// p_n, from the cache when seen recently, else computed by `nth_prime` (same
    /// bounds on n) and remembered.
    pub fn get_or_compute(&self, n: u64) -> u64 {
        self.get_or_compute_with(n, super::nth_prime)
    }

    fn get_or_compute_with(&self, n: u64, compute: impl FnOnce(u64) -> u64) -> u64 {
        if let Some(p) = self.get(n) {
            return p;
        }
        let p = compute(n); // without the lock: other threads keep being served
        self.insert(n, p);
        p
    }

    /// p_n if it is remembered (and now the most recently used), else None.
    pub fn get(&self, n: u64) -> Option<u64> {
        let mut entries = lock(&self.state);
        entries.clock += 1;
        let now = entries.clock;
        let slot = entries.slots.iter_mut().find(|slot| slot.0 == n)?;
        slot.2 = now;
        Some(slot.1)
    }

    fn insert(&self, n: u64, p: u64) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = lock(&self.state);
        entries.clock += 1;
        let now = entries.clock;
        // Two threads may have computed the same n at once; keep one copy.
        if let Some(slot) = entries.slots.iter_mut().find(|slot| slot.0 == n) {
            slot.2 = now;
            return;
        }
        if entries.slots.len() < self.capacity {
            entries.slots.push((n, p, now));
            return;
        }
        let oldest = entries
            .slots
            .iter_mut()
            .min_by_key(|slot| slot.2)
            .expect("a full cache with capacity > 0 has a slot");
        *oldest = (n, p, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn repeated_n_is_computed_once() {
        let cache = NthPrimeCache::new(4);
        let calls = AtomicU64::new(0);
        let compute = |n: u64| {
            calls.fetch_add(1, Ordering::Relaxed);
            n * 10
        };
        assert_eq!(cache.get_or_compute_with(7, compute), 70);
        assert_eq!(cache.get_or_compute_with(7, compute), 70);
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn least_recently_used_entry_is_evicted_first() {
        let cache = NthPrimeCache::new(2);
        cache.get_or_compute_with(1, |n| n);
        cache.get_or_compute_with(2, |n| n);
        cache.get_or_compute_with(1, |_| panic!("1 is cached"));
        cache.get_or_compute_with(3, |n| n); // evicts 2, used longer ago than 1
        cache.get_or_compute_with(1, |_| panic!("1 is still cached"));
        let recomputed = AtomicU64::new(0);
        cache.get_or_compute_with(2, |n| {
            recomputed.fetch_add(1, Ordering::Relaxed);
            n
        });
        assert_eq!(recomputed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn zero_capacity_always_computes() {
        let cache = NthPrimeCache::new(0);
        assert_eq!(cache.get_or_compute(3), 5);
        assert_eq!(cache.get_or_compute(3), 5);
    }

    #[test]
    fn slow_computation_does_not_block_cached_answers_on_other_threads() {
        let cache = NthPrimeCache::new(8);
        cache.get_or_compute_with(5, |_| 11);
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|scope| {
            let cache = &cache;
            scope.spawn(move || {
                cache.get_or_compute_with(9, |_| {
                    started_tx.send(()).expect("test thread alive");
                    release_rx.recv().expect("test thread alive");
                    23
                })
            });
            started_rx.recv().expect("slow computation started");
            // The slow computation is in progress; a lookup must not wait for it.
            assert_eq!(cache.get_or_compute_with(5, |_| panic!("cached")), 11);
            release_tx.send(()).expect("slow thread alive");
        });
        assert_eq!(cache.get_or_compute_with(9, |_| panic!("cached")), 23);
    }
}
