//! Keep-alive connections from a node to its workers, and one exchange on them:
//! the hot path of every prime request.
//!
//! Each worker (by its reported URL) has a stack of idle connections
//! (`crate::http::conn::Conn`). A request takes the most recently used one
//! (warm, and least likely to have been closed by the worker), or connects
//! anew, and the connection goes back to the stack unless the worker closed it.
//! A pooled connection the worker closed while it sat idle (a restarted worker)
//! fails before the first byte of an answer; `Conn` then sends the request, an
//! idempotent GET, once more on a new connection.
//!
//! Every step has a deadline: connect, send, and the answer (which grows with
//! the expected cost of N). Host names are looked up on a helper thread with a
//! deadline, and remembered for a few seconds; IP literals need no lookup.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::http::conn::{Conn, NoAnswer};
use crate::locks::lock;

/// Connecting to a worker on a LAN takes well under this; beyond it, the next
/// server is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
/// Looking up a worker's host name (an IP literal needs no lookup).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a looked-up address is used before it is looked up again.
const RESOLVED_TTL: Duration = Duration::from_secs(10);
/// Idle connections kept per worker. A stack costs nothing to search, and a
/// node has at most its HTTP threads' worth of requests in flight, so this only
/// bounds sockets left over after a burst.
const IDLE_PER_WORKER: usize = 64;
/// Workers remembered (pools and looked-up names); more is a table full of
/// stale URLs, and the whole memory is dropped and rebuilt.
const WORKERS_MAX: usize = 1024;

/// A worker URL taken apart: `http://HOST[:PORT][/]`.
struct Target<'a> {
    /// `HOST:PORT` as written, for the `Host` header and the pool's key.
    authority: &'a str,
    host: &'a str,
    port: u16,
}

/// The node's connections to every worker it has forwarded to.
#[derive(Default)]
pub(crate) struct Upstream {
    idle: Mutex<HashMap<String, Vec<Conn>>>,
    resolved: Mutex<HashMap<String, (SocketAddr, Instant)>>,
}

impl Upstream {
    /// `GET {url}{path}` with the answer due within `answer_timeout`: its
    /// status and body (at most `max_body` bytes). The error says why in a
    /// few words.
    pub fn get(
        &self,
        url: &str,
        path: &str,
        answer_timeout: Duration,
        max_body: usize,
    ) -> Result<(u16, Vec<u8>), UpstreamError> {
        let target = parse_url(url).map_err(UpstreamError::Url)?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", target.authority);
        let mut conn = match self.take(target.authority) {
            Some(conn) => conn,
            // Never past the request's budget, which the timeout is the rest of.
            None => Conn::new(
                self.resolve(&target).map_err(UpstreamError::Resolve)?,
                answer_timeout,
            )
            .with_connect_timeout(CONNECT_TIMEOUT.min(answer_timeout)),
        };
        conn.set_timeout(answer_timeout);
        let answer = conn
            .exchange_keeping_body(request.as_bytes(), max_body)
            .map(|(status, body)| (status, body.to_vec()))
            .map_err(UpstreamError::Exchange)?;
        self.give_back(target.authority, conn);
        Ok(answer)
    }

    fn take(&self, authority: &str) -> Option<Conn> {
        let mut idle = lock(&self.idle);
        idle.get_mut(authority).and_then(Vec::pop)
    }

    fn give_back(&self, authority: &str, conn: Conn) {
        if !conn.is_open() {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() >= WORKERS_MAX && !idle.contains_key(authority) {
            idle.clear();
        }
        let stack = idle.entry(authority.to_string()).or_default();
        if stack.len() < IDLE_PER_WORKER {
            stack.push(conn);
        }
    }

    /// The worker's address: an IP literal at once, a host name from memory or
    /// looked up with a deadline.
    fn resolve(&self, target: &Target) -> Result<SocketAddr, String> {
        if let Ok(addr) = target.authority.parse::<SocketAddr>() {
            return Ok(addr);
        }
        let now = Instant::now();
        let known = lock(&self.resolved);
        if let Some((addr, at)) = known.get(target.authority) {
            if now.duration_since(*at) < RESOLVED_TTL {
                return Ok(*addr);
            }
        }
        drop(known);
        let addr = lookup(target.host, target.port)?;
        let mut known = lock(&self.resolved);
        if known.len() >= WORKERS_MAX {
            known.clear();
        }
        known.insert(target.authority.to_string(), (addr, now));
        Ok(addr)
    }
}

/// `http://HOST[:PORT][/]` (what `report::Report` accepts) into its parts.
fn parse_url(url: &str) -> Result<Target<'_>, String> {
    let bad = || format!("bad worker url {url:?}");
    let authority = url
        .strip_prefix("http://")
        .ok_or_else(bad)?
        .trim_end_matches('/');
    let (host, port) = match authority.rsplit_once(':') {
        // `[::1]` alone has colons but no port.
        Some((host, port)) if !port.ends_with(']') => (host, port.parse().map_err(|_| bad())?),
        _ => (authority, 80),
    };
    if host.is_empty() || authority.contains('/') {
        return Err(bad());
    }
    Ok(Target {
        authority,
        host: host.trim_start_matches('[').trim_end_matches(']'),
        port,
    })
}

/// Looks `host` up on a helper thread, waiting at most [`RESOLVE_TIMEOUT`]
/// (the standard library's lookup has no deadline of its own).
fn lookup(host: &str, port: u16) -> Result<SocketAddr, String> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let name = host.to_string();
    std::thread::Builder::new()
        .name("resolve".to_string())
        .spawn(move || {
            let first = (name.as_str(), port)
                .to_socket_addrs()
                .map(|mut addrs| addrs.next());
            // The caller may have stopped waiting; then nobody needs the answer.
            let _ = tx.send(first);
        })
        .map_err(|e| format!("cannot look up {host}: {e}"))?;
    match rx.recv_timeout(RESOLVE_TIMEOUT) {
        Ok(Ok(Some(addr))) => Ok(addr),
        Ok(Ok(None)) => Err(format!("{host} has no address")),
        Ok(Err(e)) => Err(format!("cannot look up {host}: {e}")),
        Err(_) => Err(format!("looking up {host} timed out")),
    }
}

/// Why a forward got no answer from its worker.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    /// The table's url is not `http://HOST:PORT` (the table checks it; kept
    /// for safety).
    Url(String),
    /// The worker's host name did not resolve in time.
    Resolve(String),
    /// Connecting, writing or reading failed (the connection's own reason).
    Exchange(crate::http::conn::Error),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Url(reason) | UpstreamError::Resolve(reason) => f.write_str(reason),
            UpstreamError::Exchange(e) if e.failure == NoAnswer::Connect => {
                write!(f, "cannot connect: {}", e.detail)
            }
            UpstreamError::Exchange(e) => f.write_str(&e.detail),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn worker_urls_are_taken_apart() {
        let t = parse_url("http://127.0.0.1:13337/").expect("valid");
        assert_eq!(
            (t.authority, t.host, t.port),
            ("127.0.0.1:13337", "127.0.0.1", 13337)
        );
        let t = parse_url("http://server-1").expect("valid");
        assert_eq!((t.host, t.port), ("server-1", 80));
        let t = parse_url("http://[::1]:8080").expect("valid");
        assert_eq!((t.host, t.port), ("::1", 8080));
        for bad in [
            "https://h:1",
            "http://",
            "http://h:x",
            "http://h:1/p",
            "http://h:99999",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    /// A worker that answers `answers` requests on each connection, then
    /// closes it; returns its URL and how many connections it accepted.
    fn worker(answers_per_conn: usize, conns: usize) -> (String, std::thread::JoinHandle<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let handle = std::thread::spawn(move || {
            for accepted in 0..conns {
                let Ok((mut s, _)) = listener.accept() else {
                    return accepted;
                };
                for _ in 0..answers_per_conn {
                    let mut req = [0u8; 256];
                    match s.read(&mut req) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n11");
                }
            }
            conns
        });
        (url, handle)
    }

    #[test]
    fn connections_are_reused_and_a_stale_one_is_replaced() {
        // Two answers per connection: the third request finds its pooled
        // connection closed and must go through on a new one.
        let (url, server) = worker(2, 2);
        let upstream = Upstream::default();
        for _ in 0..4 {
            let answer = upstream
                .get(&url, "/5", Duration::from_secs(2), 32)
                .expect("answered");
            assert_eq!(answer, (200, b"11".to_vec()));
        }
        assert_eq!(
            server.join().expect("server thread"),
            2,
            "two connections for four requests"
        );
    }

    #[test]
    fn a_silent_worker_times_out_and_a_closed_port_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let upstream = Upstream::default();
        let started = Instant::now();
        let err = upstream
            .get(&url, "/5", Duration::from_millis(200), 32)
            .expect_err("no answer");
        assert!(matches!(&err, UpstreamError::Exchange(e) if e.failure == NoAnswer::Timeout));
        assert_eq!(err.to_string(), "no answer in time");
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(listener);
        let err = upstream
            .get(&url, "/5", Duration::from_millis(200), 32)
            .expect_err("closed");
        assert!(matches!(&err, UpstreamError::Exchange(e) if e.failure == NoAnswer::Connect));
        assert!(err.to_string().starts_with("cannot connect"), "{err}");
    }
}
