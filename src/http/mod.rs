//! The HTTP server wrapper every raftlb server uses (nodes and workers), over tiny_http.
//!
//! [`bind`] listens with a clear error, [`serve`] runs a fixed number of handler
//! threads that all call `recv` (tiny_http has one request queue, so one slow request,
//! a prime can take a second, never holds up another), and the helpers build the
//! replies: [`text`], [`json`], [`error`] (4xx/5xx with a one-line reason),
//! [`with_header`], and [`read_body`] with a size limit (tiny_http has none).
//! [`conn`] is the other direction: a keep-alive client connection for the hot
//! paths (a node forwarding to its workers, the load generator).
//!
//! # The keep-alive trap, and the nudge
//!
//! tiny_http 0.12 serves each connection on a thread of its own pool
//! (`util/task_pool.rs`) for the connection's whole life. `TaskPool::spawn` queues the
//! new connection and calls `notify_one` when `waiting_tasks > 0`, but a woken thread
//! decrements `waiting_tasks` only once it has reacquired the mutex. When two
//! connections arrive close together the second one sees the stale count, is queued
//! with nobody left to wake, and waits until some other connection closes: under
//! `wrk -c 64` that is never (`tests/http_keepalive.rs` shows it).
//!
//! A queued connection is picked up as soon as any pool thread comes back to the
//! queue, and a new pool thread is started whenever none is idle. So [`serve`] runs a
//! *nudger* that opens a connection to the server's own address and closes it at
//! once. tiny_http accepts it like any other: it starts a new pool thread (or wakes an
//! idle one), that thread finishes the empty connection in microseconds and then takes
//! the oldest queued connection. One nudge frees one stuck connection, and a burst of
//! new connections can leave dozens stuck (measured: with one nudge per 100 ms alone,
//! 32 of 64 were still stuck 3 s into the test), so it nudges
//! - once per connection it has not seen before (the first request from a new
//!   `remote_addr`): a burst that strands some connections also lets others through,
//!   each of those triggers a nudge, each nudge frees one stuck connection, whose
//!   first request triggers the next nudge. A chain reaction that drains a burst of
//!   64 in milliseconds and costs one loopback connection per new client connection;
//! - and every [`NUDGE_PERIOD`], for what the chain cannot see: a connection stuck
//!   behind idle keep-alive ones, with no sibling that ever sends a request.
//!
//! tiny_http's own `Drop for Server` uses the same self-connect to stop its accept loop.
//!
//! Alternatives considered:
//! - Recycling connections (answer `Connection: close` once a connection is ~1 s old
//!   or has served K requests). tiny_http drops a `Connection` header set on a
//!   `Response` (`Response::add_header` ignores it) and keeps reading the socket after
//!   any response, so this needs `Request::into_writer` plus a hand-spliced header on
//!   every response; it frees only threads held by *busy* connections, so a connection
//!   stuck behind idle keep-alive ones (a browser's spare sockets, a client pool's
//!   idle ones) still waits for the client's idle timeout, minutes for a browser; and
//!   every client pays a reconnect per second.
//! - Owning the accept loop: tiny_http has no API to hand it an accepted stream;
//!   `Server::from_listener` (used by [`bind`]) still runs tiny_http's accept thread
//!   and pool. Copying the pool would mean vendoring tiny_http.
//! - A socket read timeout so idle connections free their thread: the accepted
//!   sockets are not reachable, and on Linux a receive timeout set on the listener
//!   makes `accept` itself time out, and tiny_http ends its accept loop for good on
//!   the first `accept` error.
//!
//! The nudges cost a loopback connection per period and per new client connection
//! (measured on an idle worker: 60 ms of CPU in 20 s, and about 600 TIME_WAIT
//! sockets on the nudger's side, which Linux reuses on loopback); nothing else
//! changes, so clients keep their connections as long as they like. Measured with 64
//! keep-alive clients connecting at once to `raftlb-worker`: without the nudges 5 of
//! 6 runs left 3 to 19 connections unanswered for the whole 3 s run; with them every
//! connection had its first answer within 110 ms in every run.
//!
//! What remains: a client that sends headers and then trickles its body holds a
//! handler thread inside [`read_body`] (tiny_http gives no access to the socket's
//! timeouts); the handler thread count bounds that damage.

pub mod conn;

use std::collections::HashSet;
use std::io::{self, Cursor, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use tiny_http::{Header, Request, Response, Server};

/// A reply built in memory: every raftlb answer is small (a prime, a note of at most
/// 32 KiB, a status page).
pub type Reply = Response<Cursor<Vec<u8>>>;

/// Answers one request. It gets `&mut` so that it can read the body; [`serve`] sends
/// the reply, so every request is answered exactly once, and a failed send (the client
/// went away) is handled in one place.
pub type Handler = Arc<dyn Fn(&mut Request) -> Answer + Send + Sync>;

/// What a handler did with a request.
pub enum Answer {
    /// Here is the reply: [`serve`] sends it.
    Now(Reply),
    /// The request must wait for something slow (Raft, for a note): [`serve`]
    /// gives it to this function, which takes it elsewhere and answers it from
    /// there exactly once, so that the handler thread is free for the next
    /// request meanwhile.
    Later(Box<dyn FnOnce(Request) + Send>),
}

impl From<Reply> for Answer {
    fn from(reply: Reply) -> Answer {
        Answer::Now(reply)
    }
}

/// Sends `reply`; a client that went away is not an error of ours.
pub fn respond(request: Request, reply: Reply) {
    if let Err(e) = request.respond(reply) {
        log::debug!("could not send a reply (client gone?): {e}");
    }
}

/// How often the nudger opens a connection to its own server even when no new
/// connection asks for it: the longest a lone stuck connection waits for a thread.
pub const NUDGE_PERIOD: Duration = Duration::from_millis(100);

/// Nudges asked for and not yet made. More are dropped: a burst asks for at most one
/// per connection, and the periodic nudge catches up with anything dropped.
const NUDGES_PENDING_MAX: usize = 256;

/// Connections remembered to tell a new one from a known one. When full it is
/// cleared, which costs one extra nudge per live connection, nothing more.
const CONNECTIONS_REMEMBERED_MAX: usize = 4096;

/// A loopback connect either succeeds at once or the server is gone.
const NUDGE_CONNECT_TIMEOUT: Duration = Duration::from_millis(200);

/// Upper bound on handler threads: each has a stack, and beyond the cores the
/// useful number is bounded by how many slow requests may run at once.
pub const THREADS_MAX: usize = 256;

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
const APPLICATION_JSON: &str = "application/json";

/// Listening failed: which address, and why, in words a user can act on.
#[derive(Debug)]
pub struct BindError {
    /// The address as the user gave it.
    pub addr: String,
    /// The OS error behind it.
    pub source: io::Error,
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot listen on {}: {}",
            self.addr,
            describe_io(&self.source)
        )
    }
}

impl std::error::Error for BindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Listens on `addr` (`HOST:PORT`; port 0 picks a free one). The error reads
/// "cannot listen on 127.0.0.1:13337: address in use".
pub fn bind(addr: &str) -> Result<Server, BindError> {
    let failed = |source| BindError {
        addr: addr.to_string(),
        source,
    };
    // Binding ourselves (rather than `Server::http`) keeps the io::Error, whose kind
    // gives the message, instead of a boxed error.
    let listener = TcpListener::bind(addr).map_err(failed)?;
    Server::from_listener(listener, None).map_err(|e| failed(io::Error::other(e.to_string())))
}

/// The IP address and port `server` listens on (None only for a unix socket).
pub fn local_addr(server: &Server) -> Option<SocketAddr> {
    server.server_addr().to_ip()
}

/// Handler threads, the nudger, and the server they share. Dropping it stops them.
pub struct Serving {
    server: Arc<Server>,
    addr: Option<SocketAddr>,
    /// Tells handler threads that an error from `recv` is our `unblock`, not a fault.
    stopping: Arc<AtomicBool>,
    handlers: Vec<JoinHandle<()>>,
    /// Ends once every sender of nudge requests (ours and the handlers') is gone.
    nudger: Option<JoinHandle<()>>,
}

/// What the handler threads share besides the server.
struct Shared {
    handler: Handler,
    stopping: Arc<AtomicBool>,
    /// Connections that have sent a request, to nudge once per new one.
    seen: Mutex<HashSet<SocketAddr>>,
    nudge: Sender<()>,
}

/// Serves `server` with `threads` handler threads (clamped to 1..=[`THREADS_MAX`])
/// calling `handler`, plus the nudger described in the module doc.
pub fn serve(server: Server, threads: usize, handler: Handler) -> Serving {
    let server = Arc::new(server);
    let addr = local_addr(&server);
    let stopping = Arc::new(AtomicBool::new(false));
    let (nudge_tx, nudge_rx) = crossbeam_channel::bounded(NUDGES_PENDING_MAX);
    let shared = Arc::new(Shared {
        handler,
        stopping: Arc::clone(&stopping),
        seen: Mutex::new(HashSet::new()),
        nudge: nudge_tx,
    });
    let handlers = (0..threads.clamp(1, THREADS_MAX))
        .map(|i| {
            let (server, shared) = (Arc::clone(&server), Arc::clone(&shared));
            thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || handle_requests(&server, &shared))
                .expect("the OS can start a handler thread at startup")
        })
        .collect();
    let nudger = addr.map(|addr| {
        thread::Builder::new()
            .name("http-nudger".to_string())
            .spawn(move || nudge_until_stopped(nudge_target(addr), &nudge_rx))
            .expect("the OS can start the nudger thread at startup")
    });
    Serving {
        server,
        addr,
        stopping,
        handlers,
        nudger,
    }
}

impl Serving {
    /// Where the server listens (None only for a unix socket).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Stops the handler threads once their current request is answered, and the
    /// nudger, and waits for them; the port is released when they are gone.
    pub fn stop(self) {
        drop(self);
    }

    /// Like [`Serving::stop`], but waits at most `wait_max` for the requests in
    /// flight (a prime near max-n can take seconds). False if some were still running:
    /// they end with the process.
    pub fn stop_within(mut self, wait_max: Duration) -> bool {
        self.signal_stop();
        let threads: Vec<_> = self.handlers.drain(..).chain(self.nudger.take()).collect();
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let joiner = thread::Builder::new()
            .name("http-stop".to_string())
            .spawn(move || {
                join_all(threads);
                let _ = done_tx.send(());
            });
        joiner.is_ok() && done_rx.recv_timeout(wait_max).is_ok()
    }

    fn signal_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Each unblock releases exactly one thread waiting in `recv`.
        for _ in &self.handlers {
            self.server.unblock();
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        // Empty after `stop_within`, which has done all of this already.
        if self.handlers.is_empty() {
            return;
        }
        self.signal_stop();
        join_all(self.handlers.drain(..).chain(self.nudger.take()).collect());
    }
}

/// Joins the handler threads and then the nudger: the handlers hold the last senders
/// of nudge requests, so once they are gone the nudger sees its channel closed.
fn join_all(threads: Vec<JoinHandle<()>>) {
    for thread in threads {
        if thread.join().is_err() {
            log::error!("an http thread panicked outside its handler");
        }
    }
}

fn handle_requests(server: &Server, shared: &Shared) {
    loop {
        let mut request = match server.recv() {
            Ok(request) => request,
            Err(_) if shared.stopping.load(Ordering::SeqCst) => return,
            Err(e) => {
                // tiny_http reports a failed `accept` this way, once; later `recv`s
                // block as usual, so carrying on cannot spin.
                log::error!("http server stopped accepting connections: {e}");
                continue;
            }
        };
        if request
            .remote_addr()
            .is_some_and(|addr| shared.first_request_from(*addr))
        {
            // Full means enough nudges are on their way already.
            let _ = shared.nudge.try_send(());
        }
        // A bug in one handler must not take a thread out of the pool for good.
        let answer = panic::catch_unwind(AssertUnwindSafe(|| (shared.handler)(&mut request)))
            .unwrap_or_else(|_| {
                log::error!(
                    "http handler panicked on {} {}",
                    request.method(),
                    request.url()
                );
                Answer::Now(error(500, "internal error"))
            });
        match answer {
            Answer::Now(reply) => respond(request, reply),
            Answer::Later(take) => take(request),
        }
    }
}

impl Shared {
    /// True the first time a connection (its client address) is seen.
    fn first_request_from(&self, addr: SocketAddr) -> bool {
        // A poisoned lock only means another handler panicked mid-insert: the set is
        // still a valid set.
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if seen.len() >= CONNECTIONS_REMEMBERED_MAX {
            seen.clear();
        }
        seen.insert(addr)
    }
}

/// The address to nudge: the listening one, or loopback when listening on all
/// interfaces (0.0.0.0 or ::).
fn nudge_target(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// Nudges on every request and every period, until all senders are gone.
fn nudge_until_stopped(target: SocketAddr, requests: &Receiver<()>) {
    while requests.recv_timeout(NUDGE_PERIOD) != Err(RecvTimeoutError::Disconnected) {
        // Connect and close at once: tiny_http's read fails, no request reaches a
        // handler, and the pool thread that saw it moves on to the queue. The close
        // is a reset (linger 0), so no TIME_WAIT socket is left behind: tens of
        // nudges a second would otherwise hold thousands of ephemeral ports, and a
        // node whose fixed port lies in the ephemeral range (34572 does) could not
        // bind it for a minute after a restart.
        match TcpStream::connect_timeout(&target, NUDGE_CONNECT_TIMEOUT) {
            Ok(stream) => {
                let socket = socket2::Socket::from(stream);
                if let Err(e) = socket.set_linger(Some(Duration::ZERO)) {
                    log::debug!("http nudge: cannot set linger: {e}");
                }
            }
            Err(e) => log::debug!("http nudge to {target} failed: {e}"),
        }
    }
}

/// A reply with `status` and a `text/plain; charset=utf-8` body.
pub fn text(status: u16, body: impl Into<String>) -> Reply {
    Response::from_data(body.into().into_bytes())
        .with_status_code(status)
        .with_header(content_type(TEXT_PLAIN))
}

/// A reply with `status` and `value` as an `application/json` body.
pub fn json(status: u16, value: &impl serde::Serialize) -> Reply {
    match serde_json::to_vec(value) {
        Ok(body) => Response::from_data(body)
            .with_status_code(status)
            .with_header(content_type(APPLICATION_JSON)),
        Err(e) => {
            log::error!("cannot encode a json reply: {e}");
            error(500, "cannot encode the reply")
        }
    }
}

/// An error reply (4xx for the client's mistakes, 5xx for ours): the reason on one
/// line, line breaks in it turned into spaces so a reason quoting input stays one line.
pub fn error(status: u16, reason: &str) -> Reply {
    let line: String = reason
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    text(status, line + "\n")
}

/// `reply` with one more header. A name or value that is not valid in a header (it
/// may come from the network, like a server id) is left out and logged, not a panic.
pub fn with_header(reply: Reply, name: &str, value: &str) -> Reply {
    match Header::from_bytes(name.as_bytes(), value.as_bytes()) {
        Ok(header) => reply.with_header(header),
        Err(()) => {
            log::warn!("left out an invalid reply header {name:?}: {value:?}");
            reply
        }
    }
}

fn content_type(value: &'static str) -> Header {
    Header::from_bytes("Content-Type", value).expect("a constant content type is a valid header")
}

/// Why a request body could not be had.
#[derive(Debug)]
pub enum BodyError {
    /// Over the caller's limit: answer 413.
    TooLarge { limit: usize },
    /// The client broke off or sent a malformed body.
    Read(io::Error),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge { limit } => write!(f, "request body over {limit} bytes"),
            BodyError::Read(e) => write!(f, "cannot read the request body: {}", describe_io(e)),
        }
    }
}

impl std::error::Error for BodyError {}

impl BodyError {
    /// The reply to send: 413 for too large, 400 for a broken body.
    pub fn reply(&self) -> Reply {
        match self {
            BodyError::TooLarge { .. } => error(413, &self.to_string()),
            BodyError::Read(_) => error(400, &self.to_string()),
        }
    }
}

/// Reads the body, at most `limit` bytes: it reads `limit + 1` so that a larger body
/// is told apart from one of exactly `limit`, and refuses a declared larger length
/// without reading it.
pub fn read_body(request: &mut Request, limit: usize) -> Result<Vec<u8>, BodyError> {
    if request.body_length().is_some_and(|len| len > limit) {
        return Err(BodyError::TooLarge { limit });
    }
    let mut body = Vec::new();
    let read_max = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    request
        .as_reader()
        .take(read_max)
        .read_to_end(&mut body)
        .map_err(BodyError::Read)?;
    if body.len() > limit {
        return Err(BodyError::TooLarge { limit });
    }
    Ok(body)
}

/// An io::Error in a few lowercase words, without the "(os error 98)" tail.
fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => "address in use".to_string(),
        io::ErrorKind::AddrNotAvailable => "address not available on this machine".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => {
            let text = e.to_string();
            let text = text.split(" (os error").next().unwrap_or(&text);
            text.to_lowercase()
        }
    }
}

#[cfg(test)]
mod tests;
