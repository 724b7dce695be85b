//! `GET /N` and `GET /prime/N`: choose a server from the agreed load table and
//! forward the request to its worker.
//!
//! The choice reads only this node's applied table (no Raft round trip), so
//! primes are served even while there is no leader. The order is the policy's
//! (`choice`, `crate::balance`): least expected completion time for a request
//! of this N's cost, from this node's own work in flight on each server, the
//! speed it measured there, the agreed `wait` and recent failures. A connection
//! error, timeout or bad answer moves on to the next server, through every live
//! server if need be, within one time budget for the whole request: a few
//! servers that do not answer (a dead worker, a bogus report's closed port) at
//! the top of the order cannot starve the live ones below them.

use std::time::{Duration, Instant};

use super::upstream::Upstream;
use super::NodeHttp;
use crate::http::{self, Reply};

/// The answer's header naming the server that computed the prime (SPEC).
pub(crate) const SERVER_HEADER: &str = "X-Raftlb-Server";
/// Bounds of the whole-request time budget, which grows with the expected
/// cost. Every try gets what is left of it; the table bounds the tries
/// (`table::MAX_SERVERS`), the budget bounds their time.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
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

    /// Asks one worker for the n-th prime, within `timeout`; the error says
    /// why, in a few words.
    fn ask(&self, url: &str, n: u64, timeout: Duration) -> Result<String, String> {
        let (status, body) = self
            .upstream
            .get(url, &format!("/{n}"), timeout, MAX_ANSWER_BYTES)
            .map_err(|e| e.to_string())?;
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

/// How the tries of one prime request ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Answered {
        server: String,
        prime: String,
    },
    /// Every live server was tried and failed (502).
    AllFailed {
        failures: Vec<String>,
    },
    /// The budget ran out with `untried` live servers left (502, as SPEC
    /// names one code for "the tried servers failed"; the reason says more).
    BudgetSpent {
        failures: Vec<String>,
        untried: usize,
    },
}

/// Tries `candidates` (server, url) in order until one answers, each with what
/// is left of the budget until `deadline`. `ask` does one try.
fn try_in_order(
    candidates: &[(String, String)],
    deadline: Instant,
    mut ask: impl FnMut(&str, &str, Duration) -> Result<String, String>,
) -> Outcome {
    let mut failures = Vec::new();
    for (tried, (server, url)) in candidates.iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let untried = candidates.len() - tried;
            return Outcome::BudgetSpent { failures, untried };
        }
        match ask(server, url, left) {
            Ok(prime) => {
                let server = server.clone();
                return Outcome::Answered { server, prime };
            }
            Err(reason) => failures.push(format!("{server}: {reason}")),
        }
    }
    Outcome::AllFailed { failures }
}

pub fn handle(node: &NodeHttp, n_text: &str) -> Reply {
    let n = match crate::primes::parse_n(n_text, node.handle.max_n()) {
        Ok(n) => n,
        Err(bad) => return http::error(400, &bad.to_string()),
    };
    forward(node, n)
}

fn forward(node: &NodeHttp, n: u64) -> Reply {
    let cost_ms = expected_worker_ms(n);
    let chosen = (node.chooser).choose(&node.handle.table(), cost_ms, Instant::now());
    let Some((candidates, first)) = chosen else {
        return http::error(503, "no live server");
    };
    let mut first = Some(first);
    let deadline = Instant::now() + request_timeout(n);
    let outcome = try_in_order(&candidates, deadline, |server, url, left| {
        let mut attempt = first
            .take()
            .unwrap_or_else(|| node.chooser.start(server, cost_ms));
        let started = Instant::now();
        let result = node.forwarder.ask(url, n, left);
        (node.counters).count_forward(server, result.is_ok(), started.elapsed());
        if result.is_ok() {
            attempt.answered();
        }
        if let Err(reason) = &result {
            log::debug!("server {server} failed for n={n}: {reason}");
        }
        result
    });
    match outcome {
        Outcome::Answered { server, prime } => {
            http::with_header(http::text(200, prime), SERVER_HEADER, &server)
        }
        Outcome::AllFailed { failures } => http::error(
            502,
            &format!("every live server failed: {}", failures.join("; ")),
        ),
        // SPEC's one code for "the servers tried failed"; the reason says the
        // request ran out of time with servers left (the client, as on any
        // 5xx, tries another node).
        Outcome::BudgetSpent { failures, untried } => http::error(
            502,
            &format!(
                "time budget spent with {untried} live servers untried: {}",
                failures.join("; ")
            ),
        ),
    }
}

/// Expected worker time for the n-th prime, in milliseconds: the analytic
/// counting the worker does grows roughly as x^(2/3) with x ~ n ln n; this is
/// fitted to the worker benchmark (`cargo bench --bench primes`) within a factor
/// of a few, which is all the weighting below needs.
pub fn expected_worker_ms(n: u64) -> f64 {
    0.05 + 3.0 * (n as f64 / 1e8).powf(2.0 / 3.0)
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
    fn a_request_times_out_in_proportion_to_its_cost_within_bounds() {
        assert_eq!(request_timeout(100), MIN_REQUEST_TIMEOUT);
        assert!(request_timeout(u64::MAX) <= MAX_REQUEST_TIMEOUT);
    }

    /// A fake worker on a free loopback port that answers every request with
    /// `body`; it lives as long as the test process, as a thread blocked on
    /// accept.
    fn fake_worker(body: &'static str) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes());
            }
        });
        url
    }

    /// A loopback port nothing listens on: port 1 (tcpmux), below the
    /// ephemeral range, so that no fake worker of a test running beside this
    /// one can be given it (a port bound then closed could be: CI once saw
    /// "fake1" answer with another test's fake worker behind it).
    fn closed_port_url() -> String {
        "http://127.0.0.1:1".to_string()
    }

    /// Issue 12: four fake servers at closed ports at the top of the order
    /// starved the two live ones below them (3 tries at most): 502.
    #[test]
    fn dead_servers_ahead_of_a_live_one_do_not_starve_it() {
        let forwarder = Forwarder::new();
        let mut candidates: Vec<(String, String)> = (0..4)
            .map(|i| (format!("fake{i}"), closed_port_url()))
            .collect();
        candidates.push(("live1".into(), fake_worker("29")));
        candidates.push(("live2".into(), fake_worker("29")));
        let deadline = Instant::now() + MIN_REQUEST_TIMEOUT;
        let outcome = try_in_order(&candidates, deadline, |_, url, left| {
            forwarder.ask(url, 10, left)
        });
        assert_eq!(
            outcome,
            Outcome::Answered {
                server: "live1".into(),
                prime: "29".into()
            }
        );
    }

    #[test]
    fn every_live_server_failing_is_all_failed_and_a_spent_budget_is_not() {
        let forwarder = Forwarder::new();
        let candidates: Vec<(String, String)> = vec![
            ("closed".into(), closed_port_url()),
            ("garbage".into(), fake_worker("not a prime")),
        ];
        let deadline = Instant::now() + MIN_REQUEST_TIMEOUT;
        let outcome = try_in_order(&candidates, deadline, |_, url, left| {
            forwarder.ask(url, 10, left)
        });
        let Outcome::AllFailed { failures } = outcome else {
            panic!("{outcome:?}");
        };
        assert_eq!(failures.len(), 2, "{failures:?}");
        // Each try is given only what is left; once nothing is, the rest
        // stay untried.
        let mut given = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(50);
        let outcome = try_in_order(&candidates, deadline, |_, _, left| {
            given.push(left);
            std::thread::sleep(left);
            Err("too slow".into())
        });
        assert_eq!(given.len(), 1);
        assert!(given[0] <= Duration::from_millis(50));
        assert!(
            matches!(outcome, Outcome::BudgetSpent { untried: 1, .. }),
            "{outcome:?}"
        );
    }
}
