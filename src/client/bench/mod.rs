//! `raftlb bench`: the load generator the benchmarks use, on raftlb and on the
//! reference tools alike (HAProxy, nginx, a worker, etcd).
//!
//! Each of `concurrency` threads keeps one connection (`crate::http::conn`), to
//! one of the targets in turn (thread i to target i mod their number), and sends a
//! request, waits for its answer, sends the next: a closed loop. With a rate
//! (`--rate`, open loop) each thread sends on a schedule instead, its share
//! of the rate evenly spaced, and a request's latency is counted from when it
//! was due, not from when a late thread could send it (as wrk2 does), so a
//! target that falls behind shows its queue. The threads bound the requests
//! in flight: a target slower than the rate for long has every thread busy
//! and sends late. Prime requests may draw their N from a seeded mix
//! ([`mix`]). Answers that arrive during
//! the warm-up are not counted; then the window runs for `duration` or until
//! `max_requests` were counted. Every thread stops at the window's end, a
//! request in flight then being bounded by its own timeout (10 s by default). The tallies
//! are merged into one [`stats::Summary`].
//!
//! It must cost little per request, as it shares the machine with what it
//! measures: requests are built once per thread and rewritten in place, and
//! nothing is allocated per request on the way.

pub mod mix;
pub mod stats;

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::http::conn::{Conn, NoAnswer};
use mix::{Mix, Stream};
use stats::{Class, Summary, Tally};

/// Each request's budget, from connecting to the last byte of its answer,
/// unless `--timeout-ms` says otherwise.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// A thread waits this long after a failed connect, so that a dead port is
/// not hammered in a hot loop.
const CONNECT_PAUSE: Duration = Duration::from_millis(10);
/// Client threads only loop over a socket: a small stack lets 1024 of them
/// start without reserving 2 GiB of address space.
const THREAD_STACK_BYTES: usize = 256 * 1024;
/// Latencies each thread has room for before its vector grows.
const LATENCIES_RESERVED: usize = 16 * 1024;
/// The key every etcd write goes to, as the benchmark's own.
const ETCD_KEY: &[u8] = b"raftlb-bench";

/// What each request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// `GET /{n}`.
    Prime { n: u64 },
    /// `GET /{n}`, n drawn from the mix for each request.
    PrimeMix(Mix),
    /// `PUT /note` with a body of `size_bytes`, unique per request.
    Note { size_bytes: usize },
    /// etcd 3.4's gRPC gateway: `POST /v3/kv/put`, the value as `Note`'s body.
    EtcdPut { size_bytes: usize },
}

impl Load {
    /// The `kind` in the report.
    pub fn name(self) -> &'static str {
        match self {
            Load::Prime { .. } | Load::PrimeMix(_) => "prime",
            Load::Note { .. } => "note",
            Load::EtcdPut { .. } => "etcd-put",
        }
    }
}

/// Where the load goes: `http://HOST:PORT`, parsed and resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `HOST:PORT` as given: the `Host` header.
    pub authority: String,
    pub addr: SocketAddr,
}

impl Target {
    /// Parses `http://HOST:PORT` with an optional trailing `/`; a one-line
    /// reason otherwise. The host is resolved here, once.
    pub fn parse(text: &str) -> Result<Target, BadTarget> {
        let bad = |why: &str| BadTarget {
            text: text.to_string(),
            why: why.to_string(),
        };
        let rest = text
            .strip_prefix("http://")
            .ok_or_else(|| bad("it must start with http://"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@']) || authority.contains(char::is_whitespace) {
            return Err(bad("it must be http://HOST:PORT, with no path"));
        }
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| bad("it must name a port (http://HOST:PORT)"))?;
        let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
        if host.is_empty() || port == 0 {
            return Err(bad("it must be http://HOST:PORT"));
        }
        let addrs: Vec<SocketAddr> = (authority.to_socket_addrs())
            .map_err(|e| bad(&format!("cannot resolve the host: {e}")))?
            .collect();
        let addr = pick_addr(&addrs).ok_or_else(|| bad("the host has no address"))?;
        Ok(Target {
            authority: authority.to_string(),
            addr,
        })
    }

    /// `http://HOST:PORT`, without the trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.authority)
    }
}

/// A `--target` that is not `http://HOST:PORT` or does not resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadTarget {
    pub text: String,
    pub why: String,
}

impl std::fmt::Display for BadTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad --target {:?}: {}", self.text, self.why)
    }
}

impl std::error::Error for BadTarget {}

/// Why a benchmark run could not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BenchError {
    /// No `--target` was given.
    NoTarget,
    /// A client thread could not start (which, and why).
    Thread { thread: usize, reason: String },
    /// A client thread panicked.
    Panicked,
}

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BenchError::NoTarget => f.write_str("no target"),
            BenchError::Thread { thread, reason } => {
                write!(f, "cannot start client thread {thread}: {reason}")
            }
            BenchError::Panicked => f.write_str("a client thread panicked"),
        }
    }
}

impl std::error::Error for BenchError {}

/// The first address that accepts a connection ("localhost" is often ::1
/// first while servers listen on 127.0.0.1), else the first IPv4 one.
fn pick_addr(addrs: &[SocketAddr]) -> Option<SocketAddr> {
    if let [only] = addrs {
        return Some(*only);
    }
    let accepts = |a: &&SocketAddr| TcpStream::connect_timeout(a, Duration::from_secs(1)).is_ok();
    (addrs.iter().find(accepts))
        .or_else(|| addrs.iter().find(|a| a.is_ipv4()))
        .or_else(|| addrs.first())
        .copied()
}

/// One run's settings (`raftlb bench …`'s flags).
#[derive(Clone, Debug)]
pub struct Options {
    pub load: Load,
    /// Where the load goes; thread i sends to target i mod their number, as
    /// clients spread by DNS round robin would.
    pub targets: Vec<Target>,
    /// Client threads, each with one connection and one request at a time.
    pub concurrency: usize,
    /// Answers arriving this long after the start are not counted.
    pub warmup: Duration,
    /// The measured window after the warm-up.
    pub duration: Duration,
    /// Stops the window early once this many requests (ok or failed) counted.
    pub max_requests: Option<u64>,
    /// Each request's budget; a request over it counts as a `timeout`.
    pub request_timeout: Duration,
    /// Open loop: requests per second over all threads; None: closed loop.
    pub rate_per_sec: Option<f64>,
}

/// The clock and the count the threads share.
struct Window {
    /// The run's start: open-loop schedules count from here.
    start: Instant,
    /// Answers arriving from here on are counted (the end of the warm-up).
    counted_from: Instant,
    /// Every thread stops here.
    end: Instant,
    max_requests: u64,
    /// Requests counted so far, when `max_requests` is set.
    counted: AtomicU64,
    /// When the last request `max_requests` allows was counted.
    full_at: OnceLock<Instant>,
}

impl Window {
    fn is_open(&self) -> bool {
        Instant::now() < self.end && self.counted.load(Ordering::Relaxed) < self.max_requests
    }

    /// Whether a request answered at `done` counts, and the window is still open.
    fn take(&self, done: Instant) -> bool {
        if done >= self.end {
            return false;
        }
        if self.max_requests == u64::MAX {
            return true;
        }
        let ticket = self.counted.fetch_add(1, Ordering::Relaxed);
        if ticket + 1 == self.max_requests {
            let _ = self.full_at.set(done);
        }
        ticket < self.max_requests
    }
}

/// Runs the load and sums it up; an error when the threads cannot start.
pub fn run(options: &Options) -> Result<Summary, BenchError> {
    if options.targets.is_empty() {
        return Err(BenchError::NoTarget);
    }
    let start = Instant::now();
    let counted_from = start + options.warmup;
    let window = Window {
        start,
        counted_from,
        end: counted_from + options.duration,
        max_requests: options.max_requests.unwrap_or(u64::MAX),
        counted: AtomicU64::new(0),
        full_at: OnceLock::new(),
    };
    let tally = std::thread::scope(|scope| {
        let mut threads = Vec::with_capacity(options.concurrency);
        for thread in 0..options.concurrency {
            let window = &window;
            let spawned = std::thread::Builder::new()
                .name(format!("bench-{thread}"))
                .stack_size(THREAD_STACK_BYTES)
                .spawn_scoped(scope, move || drive(thread, options, window));
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    // The running threads end at the window's end; stop them now.
                    window.counted.store(u64::MAX, Ordering::Relaxed);
                    let reason = e.to_string();
                    return Err(BenchError::Thread { thread, reason });
                }
            }
        }
        let mut all = Tally::default();
        for handle in threads {
            all.merge(handle.join().map_err(|_| BenchError::Panicked)?);
        }
        Ok(all)
    })?;
    let window_end = window.full_at.get().copied().unwrap_or(window.end);
    Ok(Summary::new(
        options.load.name(),
        (options.targets.iter())
            .map(Target::url)
            .collect::<Vec<_>>()
            .join(","),
        options.concurrency,
        window_end.saturating_duration_since(counted_from),
        tally,
    ))
}

/// One client thread: request, answer, next, until the window closes.
fn drive(thread: usize, options: &Options, window: &Window) -> Tally {
    let target = &options.targets[thread % options.targets.len()];
    let mut conn = Conn::new(target.addr, options.request_timeout);
    let mut request = Request::new(options.load, &target.authority, thread);
    let mut tally = Tally::with_capacity(LATENCIES_RESERVED);
    let mut pace = (options.rate_per_sec)
        .map(|rate| Pace::new(window.start, thread, options.concurrency, rate));
    let mut seq = 0u64;
    while window.is_open() {
        seq += 1;
        let sent = match pace.as_mut() {
            None => Instant::now(),
            Some(pace) => {
                let due = pace.next_due();
                if due >= window.end {
                    break;
                }
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                due
            }
        };
        let bytes = request.next(seq);
        let result = conn.exchange(bytes);
        let done = Instant::now();
        if result
            .as_ref()
            .is_err_and(|e| e.failure == NoAnswer::Connect)
        {
            std::thread::sleep(CONNECT_PAUSE.min(window.end.saturating_duration_since(done)));
        }
        if done < window.counted_from {
            continue;
        }
        if !window.take(done) {
            break;
        }
        tally.record(&result, done - sent, request.class());
    }
    tally
}

/// An open-loop thread's schedule: its share of the rate, evenly spaced, the
/// threads staggered so that together they send at an even pace.
struct Pace {
    next: Instant,
    interval: Duration,
}

impl Pace {
    fn new(start: Instant, thread: usize, threads: usize, rate_per_sec: f64) -> Pace {
        let interval = Duration::from_secs_f64(threads as f64 / rate_per_sec);
        Pace {
            next: start + interval.mul_f64(thread as f64 / threads as f64),
            interval,
        }
    }

    /// When the next request is due (in the past when the thread is late).
    fn next_due(&mut self) -> Instant {
        let due = self.next;
        self.next += self.interval;
        due
    }
}

/// One thread's request bytes, built once and rewritten in place for each
/// request: a fixed head, and for writes a unique value at the end.
struct Request {
    load: Load,
    thread: usize,
    bytes: Vec<u8>,
    /// Where the per-request part starts (the whole request for a prime).
    fixed: usize,
    /// The raw value of an etcd write, before base64.
    value: Vec<u8>,
    /// A mixed prime load's N, and the head after the path.
    stream: Option<(Stream, Vec<u8>)>,
    /// Whether the last request's N came from the mix's costly range.
    costly: bool,
}

impl Request {
    fn new(load: Load, authority: &str, thread: usize) -> Request {
        let tail = format!(" HTTP/1.1\r\nHost: {authority}\r\n\r\n");
        let mut bytes = match load {
            Load::Prime { n } => format!("GET /{n}{tail}"),
            Load::PrimeMix(_) => "GET /".to_string(),
            Load::Note { size_bytes } => format!(
                "PUT /note HTTP/1.1\r\nHost: {authority}\r\n\
                 Content-Type: text/plain\r\nContent-Length: {size_bytes}\r\n\r\n"
            ),
            Load::EtcdPut { size_bytes } => {
                let key = base64::engine::general_purpose::STANDARD.encode(ETCD_KEY);
                let length = etcd_body_prefix(&key).len() + base64_len(size_bytes) + 2;
                format!(
                    "POST /v3/kv/put HTTP/1.1\r\nHost: {authority}\r\n\
                     Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n{}",
                    etcd_body_prefix(&key)
                )
            }
        }
        .into_bytes();
        let fixed = bytes.len();
        let (body, value) = match load {
            Load::Prime { .. } => (0, 0),
            // The digits of N and the rest of the head.
            Load::PrimeMix(_) => (20 + tail.len(), 0),
            Load::Note { size_bytes } => (size_bytes, 0),
            Load::EtcdPut { size_bytes } => (base64_len(size_bytes) + 2, size_bytes),
        };
        bytes.reserve_exact(body);
        Request {
            load,
            thread,
            bytes,
            fixed,
            value: Vec::with_capacity(value),
            stream: match load {
                Load::PrimeMix(mix) => Some((Stream::new(mix, thread), tail.into_bytes())),
                _ => None,
            },
            costly: false,
        }
    }

    /// The class the last request is counted in: a mixed load's costly or
    /// cheap N; every other load is one class.
    fn class(&self) -> Class {
        match (self.load, self.costly) {
            (Load::PrimeMix(_), true) => Class::Costly,
            (Load::PrimeMix(_), false) => Class::Cheap,
            _ => Class::Only,
        }
    }

    /// The bytes of request `seq`.
    fn next(&mut self, seq: u64) -> &[u8] {
        match self.load {
            Load::Prime { .. } => {}
            Load::PrimeMix(_) => {
                let (stream, tail) = self.stream.as_mut().expect("a mixed load has a stream");
                self.bytes.truncate(self.fixed);
                let (n, costly) = stream.next_n();
                self.costly = costly;
                write!(self.bytes, "{n}").expect("writing to a Vec cannot fail");
                self.bytes.extend_from_slice(tail);
            }
            Load::Note { size_bytes } => {
                self.bytes.truncate(self.fixed);
                unique_value(&mut self.bytes, self.thread, seq, size_bytes);
            }
            Load::EtcdPut { size_bytes } => {
                self.value.clear();
                unique_value(&mut self.value, self.thread, seq, size_bytes);
                self.bytes.resize(self.fixed + base64_len(size_bytes), 0);
                base64::engine::general_purpose::STANDARD
                    .encode_slice(&self.value, &mut self.bytes[self.fixed..])
                    .expect("the room is base64_len of the value");
                self.bytes.extend_from_slice(b"\"}");
            }
        }
        &self.bytes
    }
}

fn etcd_body_prefix(key_base64: &str) -> String {
    format!("{{\"key\":\"{key_base64}\",\"value\":\"")
}

/// The length of `n` bytes in padded base64.
fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// Appends `size_bytes` bytes to `out`: `c{thread}-{seq}-` then `x`s, unique
/// per request as long as the tag fits (cut short below about 12 bytes).
fn unique_value(out: &mut Vec<u8>, thread: usize, seq: u64, size_bytes: usize) {
    let start = out.len();
    write!(out, "c{thread}-{seq}-").expect("writing to a Vec cannot fail");
    out.resize(start + size_bytes, b'x');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(text: &str) -> Result<Target, String> {
        Target::parse(text).map_err(|e| e.to_string())
    }

    #[test]
    fn targets_must_be_http_host_port() {
        let good = target("http://127.0.0.1:8080/").expect("valid");
        assert_eq!(good.authority, "127.0.0.1:8080");
        assert_eq!(good.url(), "http://127.0.0.1:8080");
        assert_eq!(good.addr, "127.0.0.1:8080".parse().expect("addr"));
        for bad in [
            "https://127.0.0.1:8080",
            "http://127.0.0.1",
            "http://127.0.0.1:8080/100",
            "http://:8080",
            "http://127.0.0.1:0",
            "http://127.0.0.1:99999",
            "127.0.0.1:8080",
            "garbage",
            "",
        ] {
            let error = target(bad).expect_err(bad);
            assert!(error.starts_with("bad --target") && !error.contains('\n'));
        }
    }

    #[test]
    fn note_bodies_are_the_size_asked_and_unique() {
        let mut request = Request::new(Load::Note { size_bytes: 20 }, "h:1", 3);
        let first = String::from_utf8(request.next(1).to_vec()).expect("ascii");
        let second = String::from_utf8(request.next(2).to_vec()).expect("ascii");
        assert!(first.starts_with("PUT /note HTTP/1.1\r\nHost: h:1\r\n"));
        assert!(first.contains("\r\nContent-Length: 20\r\n\r\n"));
        assert!(first.ends_with("\r\n\r\nc3-1-xxxxxxxxxxxxxxx"), "{first}");
        assert!(second.ends_with("\r\n\r\nc3-2-xxxxxxxxxxxxxxx"), "{second}");
        let mut tiny = Request::new(Load::Note { size_bytes: 1 }, "h:1", 12);
        assert!(tiny.next(12345).ends_with(b"\r\n\r\nc"));
    }

    #[test]
    fn mixed_primes_rewrite_the_path_with_each_n_of_the_stream() {
        let mix = Mix {
            cheap: mix::NRange { lo: 10, hi: 99 },
            costly: mix::NRange {
                lo: 100_000,
                hi: 999_999,
            },
            costly_per_mille: 500,
            seed: 1,
            offset: 0,
        };
        let mut request = Request::new(Load::PrimeMix(mix), "h:1", 2);
        let mut stream = Stream::new(mix, 2);
        for seq in 1..50 {
            let text = String::from_utf8(request.next(seq).to_vec()).expect("ascii");
            let (n, costly) = stream.next_n();
            assert_eq!(text, format!("GET /{n} HTTP/1.1\r\nHost: h:1\r\n\r\n"));
            let class = if costly { Class::Costly } else { Class::Cheap };
            assert_eq!(request.class(), class, "N = {n} is counted in its class");
        }
        let mut note = Request::new(Load::Note { size_bytes: 4 }, "h:1", 0);
        note.next(1);
        assert_eq!(note.class(), Class::Only);
    }

    #[test]
    fn open_loop_threads_are_staggered_and_evenly_spaced() {
        let start = Instant::now();
        // 4 threads at 100/s: each sends every 40 ms, thread 1 from 10 ms on.
        let mut pace = Pace::new(start, 1, 4, 100.0);
        let due: Vec<Duration> = (0..3).map(|_| pace.next_due() - start).collect();
        let ms = |d: Duration| (d.as_secs_f64() * 1000.0).round() as u64;
        assert_eq!(due.iter().map(|d| ms(*d)).collect::<Vec<_>>(), [10, 50, 90]);
    }

    #[test]
    fn etcd_puts_carry_the_value_in_base64_json() {
        let mut request = Request::new(Load::EtcdPut { size_bytes: 10 }, "h:2379", 0);
        let text = String::from_utf8(request.next(7).to_vec()).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head");
        assert!(head.starts_with("POST /v3/kv/put HTTP/1.1\r\n"));
        let json: serde_json::Value = serde_json::from_str(body).expect("JSON body");
        let decode = |field: &str| {
            let text = json[field].as_str().expect("a string");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .expect("base64");
            String::from_utf8(bytes).expect("utf-8")
        };
        assert_eq!(decode("key"), "raftlb-bench");
        assert_eq!(decode("value"), "c0-7-xxxxx");
        assert!(head.ends_with(&format!("Content-Length: {}", body.len())));
        let again = String::from_utf8(request.next(8).to_vec()).expect("ascii");
        assert_eq!(again.len(), text.len());
    }
}
