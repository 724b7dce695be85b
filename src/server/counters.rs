//! What the HTTP side counts for `/metrics`: answers by code, what the server
//! refused or cut on its own, reports taken, and each server's forwards with
//! their latency histogram. (The event loop and the UDP thread count theirs in
//! the runtime's `LoopCounters`.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::http;
use crate::locks::lock;

/// The HTTP side's counters; one per node, held by `NodeHttp`.
#[derive(Default)]
pub struct HttpCounters {
    /// Reports authenticated, parsed and handed to the loop.
    pub reports_received: AtomicU64,
    /// HTTP answers by status code.
    pub responses: Mutex<BTreeMap<u16, u64>>,
    /// Prime requests forwarded, by server: counts and latency histogram.
    pub forwards: Mutex<BTreeMap<String, Forwards>>,
    /// Connections refused beyond the total cap, and beyond the per-source cap.
    pub refused_total_cap: AtomicU64,
    pub refused_per_source_cap: AtomicU64,
    /// Requests whose head (431) or body (413) was over its limit.
    pub heads_too_large: AtomicU64,
    pub bodies_too_large: AtomicU64,
    /// Connections cut by a timeout while reading a head, a body, or writing.
    pub timeouts_head: AtomicU64,
    pub timeouts_body: AtomicU64,
    pub timeouts_write: AtomicU64,
}

/// The upper bounds of `raftlb_forward_seconds`' buckets: from a small prime
/// (about a millisecond) to the largest N's budget.
pub(crate) const FORWARD_BUCKETS_SECONDS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// What one server's forwards came to.
#[derive(Clone, Default, Debug)]
pub struct Forwards {
    pub ok: u64,
    pub failed: u64,
    /// Per bucket of `FORWARD_BUCKETS_SECONDS` (not cumulative), the last
    /// one over the largest bound.
    pub buckets: [u64; FORWARD_BUCKETS_SECONDS.len() + 1],
    pub micros_sum: u64,
}

impl HttpCounters {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_response(&self, code: u16) {
        *lock(&self.responses).entry(code).or_insert(0) += 1;
    }

    /// The answers by code so far.
    pub fn responses(&self) -> BTreeMap<u16, u64> {
        lock(&self.responses).clone()
    }

    /// Each server's forwards so far.
    pub fn forwards(&self) -> BTreeMap<String, Forwards> {
        lock(&self.forwards).clone()
    }

    /// Counts what the HTTP server reports: every answer by code, and what it
    /// refused or cut on its own.
    pub(crate) fn count_http(&self, event: http::Event) {
        let counter = match event {
            http::Event::Answered(code) => return self.count_response(code),
            http::Event::Refused(http::Cap::Total) => &self.refused_total_cap,
            http::Event::Refused(http::Cap::PerSource) => &self.refused_per_source_cap,
            http::Event::HeadTooLarge => &self.heads_too_large,
            http::Event::BodyTooLarge => &self.bodies_too_large,
            http::Event::TimedOut(http::Phase::Head) => &self.timeouts_head,
            http::Event::TimedOut(http::Phase::Body) => &self.timeouts_body,
            http::Event::TimedOut(http::Phase::Write) => &self.timeouts_write,
        };
        HttpCounters::add(counter);
    }

    /// One forward to `server`: whether it answered, and how long it took
    /// (connect to last byte, failures included).
    pub(crate) fn count_forward(&self, server: &str, ok: bool, took: Duration) {
        let mut map = lock(&self.forwards);
        // Bounded: only servers from the table (at most MAX_SERVERS) are forwarded to.
        let entry = map.entry(server.to_string()).or_default();
        if ok {
            entry.ok += 1;
        } else {
            entry.failed += 1;
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        entry.micros_sum = entry.micros_sum.saturating_add(micros);
        let bucket = FORWARD_BUCKETS_SECONDS
            .iter()
            .position(|le| took.as_secs_f64() <= *le)
            .unwrap_or(FORWARD_BUCKETS_SECONDS.len());
        entry.buckets[bucket] += 1;
    }
}
