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

use super::NodeHttp;
use crate::http::{self, Reply};
use crate::runtime::shared::Shared;

/// Connecting to a worker on a LAN takes well under this; beyond it, the next
/// server is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
/// Sending a one-line request, or reading an answer of a few digits once its
/// headers came, takes well under this.
const SEND_AND_BODY_TIMEOUT: Duration = Duration::from_secs(1);
/// Looking up a worker's host name (an IP literal needs no lookup).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);
/// Bounds of the whole-request timeout, which grows with the expected cost.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Servers tried for one request at most.
const MAX_TRIES: usize = 3;
/// An answer is a number of at most 20 digits; anything longer is not one.
const MAX_ANSWER_BYTES: u64 = 32;
/// Idle keep-alive connections kept per worker. ureq's pool is a list scanned on
/// every call (perf showed the scan at 8% of the node with 64 per worker), and
/// under a steady load most connections are busy, not idle: 16 keeps the scan
/// short without reconnects (wrk -c 64: 23-26k req/s, against 23k with 64).
const IDLE_CONNECTIONS_PER_WORKER: usize = 16;

/// The one HTTP client of the node: keep-alive connections to the workers.
pub struct Forwarder {
    agent: ureq::Agent,
}

impl Default for Forwarder {
    fn default() -> Self {
        Forwarder::new()
    }
}

impl Forwarder {
    pub fn new() -> Forwarder {
        // Every phase has its own timeout and there is no global one: ureq
        // resolves the host on every call, even for a pooled connection, and with
        // a global timeout it does so on a new thread. A thread per request cost
        // about half the node's throughput (perf: mmap and munmap of thread
        // stacks). An IP literal now resolves in place; a host name still gets a
        // bounded lookup (see `ask`).
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_send_request(Some(SEND_AND_BODY_TIMEOUT))
            .timeout_recv_body(Some(SEND_AND_BODY_TIMEOUT))
            .http_status_as_error(false)
            .max_idle_connections_per_host(IDLE_CONNECTIONS_PER_WORKER)
            .max_idle_connections(IDLE_CONNECTIONS_PER_WORKER * 4)
            .build();
        Forwarder {
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// Asks one worker for the n-th prime; the error says why, in a few words.
    fn ask(&self, url: &str, n: u64) -> Result<String, String> {
        let mut response = self
            .agent
            .get(format!("{}/{n}", url.trim_end_matches('/')))
            .config()
            .timeout_recv_response(Some(request_timeout(n)))
            .timeout_resolve((!is_ip_literal(url)).then_some(RESOLVE_TIMEOUT))
            .build()
            .call()
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
            .map_err(|e| e.to_string())?;
        let answer = body.trim();
        if status != 200 {
            return Err(format!("answered {status} {}", super::truncate(answer)));
        }
        if answer.is_empty() || !answer.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "answered {:?}, not a number",
                super::truncate(answer)
            ));
        }
        Ok(answer.to_string())
    }
}

/// Whether the host of `http://HOST:PORT` is an IP address (v4, or v6 in
/// brackets), which needs no name lookup.
fn is_ip_literal(url: &str) -> bool {
    let authority = url.trim_start_matches("http://").trim_end_matches('/');
    authority.parse::<std::net::SocketAddr>().is_ok()
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
    fn ip_literals_are_told_from_host_names() {
        assert!(is_ip_literal("http://127.0.0.1:13337"));
        assert!(is_ip_literal("http://[::1]:13337/"));
        assert!(!is_ip_literal("http://localhost:13337"));
        assert!(!is_ip_literal("http://server-1:80"));
    }

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
