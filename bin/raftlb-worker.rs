//! raftlb-worker: the prime server behind the balancer (SPEC "Binaries").
//!
//! `GET /N` answers the N-th prime (just the digits), `GET /health` answers `ok`.
//! Each connection is served on its own thread (`raftlb::http`); at most
//! `--threads` primes are computed at once, the others wait for a place in
//! arrival order (`raftlb::places`); an N
//! answered recently comes from the cache at once, without a place.
//! Routing follows the nodes': a path of one segment is a prime request, so `/abc`
//! and `/` (empty N) are 400 with a one-line reason, as SPEC "Numbers" says; a path of
//! more segments is 404; a method other than GET or HEAD on those paths is 405 with
//! `Allow: GET`. It stops on SIGINT or SIGTERM with exit 0; a failed start (port in
//! use) exits 1 with a one-line message, bad flags exit 2 (clap).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use raftlb::http::{self, Limits, Reply, Request, Service};
use raftlb::places::Places;
use raftlb::primes::{self, NthPrimeCache};

/// Answers remembered: clients behind a balancer repeat popular N, and a repeat
/// should cost a lookup, not another count.
const CACHE_ANSWERS_MAX: usize = 1024;

/// How long a request waits for a place to compute before it is answered 503:
/// past this a balancer has given up on it and tried another server.
const COMPUTE_WAIT_MAX: Duration = Duration::from_secs(30);

/// How long a stop waits for requests in flight before the process exits anyway.
const STOP_WAIT: Duration = Duration::from_secs(2);

#[derive(Parser, Debug)]
#[command(
    name = "raftlb-worker",
    version,
    about = "Serves the N-th prime over HTTP"
)]
struct Args {
    /// TCP port to listen on.
    #[arg(long, default_value_t = 13337)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Primes computed at once [default: 2 per CPU, at least 4]; more requests
    /// wait for a place. Enough that cheap requests seldom queue behind the slow
    /// ones near max-n.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=COMPUTING_MAX as i64))]
    threads: Option<u16>,
    /// Largest N answered; larger ones get 400.
    #[arg(long, default_value_t = primes::MAX_N,
          value_parser = clap::value_parser!(u64).range(1..=primes::MAX_SUPPORTED_N))]
    max_n: u64,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("raftlb-worker: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    // Before binding, so a signal that arrives during start-up is not lost.
    let mut signals =
        Signals::new([SIGINT, SIGTERM]).map_err(|e| format!("cannot watch signals: {e}"))?;
    let addr = host_port(&args.host, args.port);
    let listener = http::bind(&addr).map_err(|e| e.to_string())?;
    let threads = args.threads.map_or_else(default_threads, usize::from);
    let worker = Worker {
        max_n: args.max_n,
        cache: NthPrimeCache::new(CACHE_ANSWERS_MAX),
        places: Places::new(threads),
    };
    let serving = http::serve(listener, Limits::default(), worker);
    log::info!(
        "listening on http://{addr} with {threads} threads, max-n {}",
        args.max_n
    );
    if let Some(signal) = signals.forever().next() {
        log::info!("stopping on signal {signal}");
    }
    if !serving.stop_within(STOP_WAIT) {
        log::warn!("requests still running after {STOP_WAIT:?} are cut off");
    }
    Ok(())
}

/// `HOST:PORT`, with an IPv6 literal in brackets.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Upper bound of `--threads`: computations beyond the cores only share them.
const COMPUTING_MAX: usize = 256;

/// Two per CPU, at least 4: a request near max-n computes for a second or
/// more, and cheap requests must find a free place meanwhile.
fn default_threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    (cpus * 2).clamp(4, COMPUTING_MAX)
}

struct Worker {
    max_n: u64,
    cache: NthPrimeCache,
    /// The places to compute a prime in (`--threads`), taken first come,
    /// first served.
    places: Places,
}

impl Service for Worker {
    /// No route takes a body.
    fn body_limit(&self, _method: &str, _path: &str) -> usize {
        0
    }

    fn handle(&self, request: &Request) -> Reply {
        self.answer(request)
    }
}

impl Worker {
    fn answer(&self, request: &Request) -> Reply {
        let path = request.path();
        let Some(segment) = path.strip_prefix('/').filter(|rest| !rest.contains('/')) else {
            return http::error(404, &format!("no such path: {}", shorten(path)));
        };
        if !matches!(request.method(), "GET" | "HEAD") {
            return http::with_header(
                http::error(405, &format!("{path} takes GET")),
                "Allow",
                "GET",
            );
        }
        if segment == "health" {
            return http::text(200, "ok");
        }
        let n = match primes::parse_n(segment, self.max_n) {
            Ok(n) => n,
            Err(bad) => return http::error(400, &bad.to_string()),
        };
        // A repeat is a lookup: it takes no computing place, so it never waits
        // behind the slow N that hold them all.
        if let Some(p) = self.cache.get(n) {
            return http::text(200, p.to_string());
        }
        let Some(_place) = self.places.take(Instant::now() + COMPUTE_WAIT_MAX) else {
            return http::error(503, "worker busy: every computing place taken, try again");
        };
        http::text(200, self.cache.get_or_compute(n).to_string())
    }
}

/// A path echoed in an error is cut short: a huge URL must not make a huge answer.
fn shorten(text: &str) -> String {
    const CHARS_MAX: usize = 64;
    match text.char_indices().nth(CHARS_MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}
