//! Regression test for a connection pool that leaves a new keep-alive connection
//! unserved while the other connections stay open: tiny_http 0.12, which served
//! here before `raftlb::http`, did (a lost wake-up in its pool).
//!
//! Many clients open keep-alive connections at the same moment and then do
//! request/response in a loop for a few seconds; every one must be answered.
//! The clients speak HTTP/1.1 by hand over `TcpStream` so that each one is exactly
//! one connection (a pooling client such as ureq could hide a stuck connection by
//! using another one), and so that a stuck read is bounded by our own deadline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use raftlb::http;

/// As many connections as `wrk -c 64`, where the bug was first seen.
const CONNECTIONS: usize = 64;
/// How long every connection keeps asking.
const RUN_TIME: Duration = Duration::from_secs(3);
/// A client whose first answer takes longer than this was left unserved. With a
/// thread per connection the slowest of 64 gets its first answer within tens of
/// milliseconds; a stuck one would be served only when the others close at the
/// end of the run.
const FIRST_ANSWER_MAX: Duration = Duration::from_millis(1000);
/// Upper bound on the answers one connection counts, so no loop is unbounded.
const ANSWERS_MAX: u64 = 1_000_000;
/// Upper bound on one response's size: ours are a few hundred bytes.
const RESPONSE_BYTES_MAX: usize = 16 * 1024;

/// What one client saw during the run.
#[derive(Debug, Default)]
struct ClientStats {
    /// Complete responses received.
    answers: u64,
    /// Time from the start until the first response: how long it waited to be served.
    first_answer_after: Option<Duration>,
    /// Times the server closed (or asked to close) and the client reconnected.
    reconnects: u64,
}

/// Runs `CONNECTIONS` clients against `addr` for `RUN_TIME`; they all connect at once.
fn hammer(addr: SocketAddr) -> Vec<ClientStats> {
    let barrier = Arc::new(Barrier::new(CONNECTIONS));
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                run_client(addr)
            })
        })
        .collect();
    clients
        .into_iter()
        .map(|client| client.join().expect("a client thread panicked"))
        .collect()
}

/// One client: request/response in a loop on one keep-alive connection until the
/// deadline, reconnecting only when the server closes or says `Connection: close`.
fn run_client(addr: SocketAddr) -> ClientStats {
    let start = Instant::now();
    let deadline = start + RUN_TIME;
    let mut stats = ClientStats::default();
    let mut stream = None;
    while Instant::now() < deadline && stats.answers < ANSWERS_MAX {
        let conn = match stream.take() {
            Some(conn) => conn,
            None => match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(conn) => conn,
                Err(_) => continue,
            },
        };
        match exchange(conn, deadline) {
            Some((conn, keep_alive)) => {
                stats.answers += 1;
                stats.first_answer_after.get_or_insert(start.elapsed());
                if keep_alive {
                    stream = Some(conn);
                } else {
                    stats.reconnects += 1;
                }
            }
            // Past the deadline the exchange was cut short by us, not the server.
            None if Instant::now() < deadline => stats.reconnects += 1,
            None => {}
        }
    }
    stats
}

/// Sends one GET and reads one response before `deadline`. Returns the connection
/// and whether it may be reused, or None if the connection failed or timed out.
fn exchange(mut conn: TcpStream, deadline: Instant) -> Option<(TcpStream, bool)> {
    conn.write_all(b"GET /x HTTP/1.1\r\nHost: test\r\n\r\n")
        .ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(len) = complete_response_len(&buf) {
            let head = String::from_utf8_lossy(&buf[..len]).to_ascii_lowercase();
            let keep_alive = !head.contains("\r\nconnection: close");
            return (len == buf.len()).then_some((conn, keep_alive));
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        // A short read timeout so that a stuck connection notices the deadline.
        let wait = left
            .min(Duration::from_millis(100))
            .max(Duration::from_millis(1));
        conn.set_read_timeout(Some(wait)).ok()?;
        match conn.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) if buf.len() + n <= RESPONSE_BYTES_MAX => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => return None,
            Err(e) if is_timeout(&e) => continue,
            Err(_) => return None,
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// The length of the first complete response in `buf` (head plus a body of
/// `Content-Length` bytes), or None while it is incomplete.
fn complete_response_len(buf: &[u8]) -> Option<usize> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let body_len = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let total = head_end + body_len;
    (buf.len() >= total).then_some(total)
}

/// One line per client that waited too long for its first answer (or never got
/// one), for the failure message.
fn starved(stats: &[ClientStats]) -> Vec<String> {
    stats
        .iter()
        .enumerate()
        .filter(|(_, s)| s.first_answer_after.is_none_or(|t| t > FIRST_ANSWER_MAX))
        .map(|(i, s)| format!("client {i}: {s:?}"))
        .collect()
}

fn summary(stats: &[ClientStats]) -> String {
    let answers: u64 = stats.iter().map(|s| s.answers).sum();
    let mut firsts: Vec<Duration> = stats.iter().filter_map(|s| s.first_answer_after).collect();
    firsts.sort();
    let slowest_first = firsts.iter().rev().take(8).collect::<Vec<_>>();
    let reconnects: u64 = stats.iter().map(|s| s.reconnects).sum();
    format!(
        "{} of {} clients answered, {answers} answers, {reconnects} reconnects, \
         slowest first answers {slowest_first:?}",
        stats.iter().filter(|s| s.answers > 0).count(),
        stats.len()
    )
}

/// Answers `ok` to everything.
struct AlwaysOk;

impl http::Service for AlwaysOk {
    fn body_limit(&self, _method: &str, _path: &str) -> usize {
        0
    }

    fn handle(&self, _request: &http::Request) -> http::Reply {
        http::text(200, "ok")
    }
}

#[test]
fn every_keepalive_connection_is_served_under_64_concurrent_clients() {
    let listener = http::bind("127.0.0.1:0").expect("bind a free loopback port");
    let addr = listener.local_addr();
    let serving = http::serve(listener, http::Limits::default(), AlwaysOk);
    let stats = hammer(addr);
    serving.stop();
    println!("raftlb::http: {}", summary(&stats));
    let starved = starved(&stats);
    assert!(
        starved.is_empty(),
        "{} starved: {starved:#?}",
        summary(&stats)
    );
}
