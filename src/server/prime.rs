//! `GET /N` and `GET /prime/N`: choose a server from the agreed load table and
//! forward the request to its worker.
//!
//! The choice reads only this node's applied table (no Raft round trip), so
//! primes are served even while there is no leader. The order is the lowest
//! `cpu + wait` first, with this node's own in-flight work added on top, weighted
//! by its expected cost, so a burst between two reports spreads over the servers
//! instead of landing on the one that looked idle a second ago. A connection
//! error, timeout or bad answer moves on to the next server.

use std::time::Duration;

use super::upstream::Upstream;
use super::NodeHttp;
use crate::http::{self, Reply};
use crate::runtime::shared::Shared;

/// Bounds of the whole-request timeout, which grows with the expected cost.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Servers tried for one request at most.
const MAX_TRIES: usize = 3;
/// An answer is a number of at most 20 digits; anything longer is not one.
const MAX_ANSWER_BYTES: usize = 32;

/// The one HTTP client of the node: keep-alive connections to the workers.
#[derive(Default)]
pub struct Forwarder {
    upstream: Upstream,
}

impl Forwarder {
    pub fn new() -> Forwarder {
        Forwarder::default()
    }

    /// Asks one worker for the n-th prime; the error says why, in a few words.
    fn ask(&self, url: &str, n: u64) -> Result<String, String> {
        let (status, body) =
            self.upstream
                .get(url, &format!("/{n}"), request_timeout(n), MAX_ANSWER_BYTES)?;
        let body = String::from_utf8_lossy(&body);
        let digits = body.trim();
        if status != 200 {
            return Err(format!("answered {} {}", status, super::truncate(digits)));
        }
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "answered {:?}, not a number",
                super::truncate(digits)
            ));
        }
        Ok(digits.to_string())
    }
}

pub fn handle(node: &NodeHttp, n_text: &str) -> Reply {
    let n = match crate::primes::parse_n(n_text, node.shared.max_n) {
        Ok(n) => n,
        Err(reason) => return http::error(400, &reason),
    };
    forward(node, n)
}

fn forward(node: &NodeHttp, n: u64) -> Reply {
    let shared: &Shared = &node.shared;
    let points = in_flight_points(n);
    let chosen = shared.in_flight.choose(&shared.table(), points);
    let Some((candidates, first_guard)) = chosen else {
        return http::error(503, "no live server");
    };
    let mut guard = Some(first_guard);
    let mut failures = Vec::new();
    for (server, url) in candidates.iter().take(MAX_TRIES) {
        let _in_flight = guard
            .take()
            .unwrap_or_else(|| shared.in_flight.start(server, points));
        let result = node.forwarder.ask(url, n);
        shared.metrics.count_forward(server, result.is_ok());
        match result {
            Ok(prime) => {
                return http::with_header(http::text(200, prime), "X-Raftlb-Server", server)
            }
            Err(reason) => {
                log::debug!("server {server} failed for n={n}: {reason}");
                failures.push(format!("{server}: {reason}"));
            }
        }
    }
    http::error(
        502,
        &format!("every tried server failed: {}", failures.join("; ")),
    )
}

/// Expected worker time for the n-th prime, in milliseconds: the analytic
/// counting the worker does grows roughly as x^(2/3) with x ~ n ln n; this is
/// fitted to the worker benchmark (`cargo bench --bench primes`) within a factor
/// of a few, which is all the weighting below needs.
pub fn expected_worker_ms(n: u64) -> f64 {
    0.05 + 3.0 * (n as f64 / 1e8).powf(2.0 / 3.0)
}

/// How much one in-flight request adds to its server's load, in load points
/// (the unit of `cpu + wait`, percent). A request keeps a worker thread busy,
/// so even a cheap one counts 10 points; an expensive one counts up to about 3x
/// that. The log scale keeps one huge request from hiding a server entirely.
pub fn in_flight_points(n: u64) -> f64 {
    10.0 * (1.0 + (1.0 + expected_worker_ms(n)).log10())
}

/// A slow answer is only a failure when it is much slower than expected.
fn request_timeout(n: u64) -> Duration {
    Duration::from_secs_f64(expected_worker_ms(n) * 50.0 / 1000.0)
        .clamp(MIN_REQUEST_TIMEOUT, MAX_REQUEST_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expensive_requests_weigh_more_but_boundedly() {
        let cheap = in_flight_points(100);
        let big = in_flight_points(10_000_000_000);
        assert!((10.0..11.0).contains(&cheap), "{cheap}");
        assert!(big > 2.0 * cheap && big < 4.0 * cheap, "{big}");
        assert_eq!(request_timeout(100), MIN_REQUEST_TIMEOUT);
        assert!(request_timeout(u64::MAX) <= MAX_REQUEST_TIMEOUT);
    }
}
