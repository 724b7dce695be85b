//! The HTTP/1.1 server of nodes and workers, and the reply helpers.
//!
//! Blocking, one thread per connection like the rest of the design: the accept
//! loop (`server`) admits a connection under two caps (a total, and one per
//! source address, so one address cannot starve the others), and the
//! connection's own thread (`connection`) reads a head (parsed by [`head`]
//! with `httparse`), asks the [`Service`] how large a body the route takes,
//! reads it, calls [`Service::handle`] and writes the [`Reply`], one request at
//! a time. Every limit is in [`Limits`], with its reason; every answer the
//! server gives on its own (431, 413, 400, 503 for a cap) and every timeout is
//! reported to [`Service::observe`] so that a node can count it.
//!
//! Why not tiny_http, which served here before: version 0.12 (the newest)
//! allocates an unread body's declared length when a request is dropped (one
//! `Content-Length: 4611686018427387904` aborted the process), reads header
//! lines without a limit, ends its accept loop on the first EMFILE, has no
//! socket timeouts, and its pool left new keep-alive connections unserved. None
//! of that can be fixed from outside the crate.
//!
//! The other direction, a keep-alive client connection for the hot paths (a
//! node forwarding to its workers, the load generator), is [`conn`].

pub mod conn;
mod connection;
pub mod head;
mod server;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

pub use head::{parse_head, Framing, Head, HeadError, HEADERS_MAX};
pub use server::{bind, serve, Listener, Serving};

/// Every bound of the server. [`Limits::default`] is what nodes and workers
/// run with; tests shorten the timeouts.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request head (request line and headers); more is 431. It is
    /// also the connection's whole read buffer, so a client pipelining
    /// requests without reading the answers holds at most this much.
    pub head_bytes_max: usize,
    /// From a connection's accept, or a request's first byte, to the end of
    /// its head: a slowloris trickling a byte at a time is cut here.
    pub head_timeout: Duration,
    /// From the end of the head to the end of the body, in all.
    pub body_timeout: Duration,
    /// To write one answer, in all: a client that never reads is cut here.
    pub write_timeout: Duration,
    /// A keep-alive connection waiting for its next request is closed after this.
    pub idle_timeout: Duration,
    /// Connections open at once; more are answered 503 and closed.
    pub connections_max: usize,
    /// Connections open at once from one source address; more are 503 and closed.
    pub connections_per_source_max: usize,
    /// Stack of a connection's thread: the deepest handler path (a node
    /// forwarding a prime, serde_json for /status) uses a few tens of KiB.
    pub stack_bytes: usize,
}

/// 8 KiB, as SPEC says; 64 header lines fit a browser's with room to spare.
pub(crate) const HEAD_BYTES_MAX: usize = 8 * 1024;
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A thread each: 1024 threads of 256 KiB reserve 256 MiB of address space
/// and touch a few MiB.
pub(crate) const CONNECTIONS_MAX: usize = 1024;
/// Twice what the benchmarks open from one address (64 keep-alive clients).
pub const CONNECTIONS_PER_SOURCE_MAX: usize = 128;
pub(crate) const STACK_BYTES: usize = 256 * 1024;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            head_bytes_max: HEAD_BYTES_MAX,
            head_timeout: HEAD_TIMEOUT,
            body_timeout: BODY_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            connections_max: CONNECTIONS_MAX,
            connections_per_source_max: CONNECTIONS_PER_SOURCE_MAX,
            stack_bytes: STACK_BYTES,
        }
    }
}

/// What a server answers. It runs on each connection's own thread.
pub trait Service: Send + Sync + 'static {
    /// The largest body `method` on `path` takes; a declared or received body
    /// over it is answered 413 and the connection closed, before `handle`.
    fn body_limit(&self, method: &str, path: &str) -> usize;
    /// Answers one request, whose body is whole and within the limit.
    fn handle(&self, request: &Request) -> Reply;
    /// Told of every answer written and of what the server did on its own.
    fn observe(&self, _event: Event) {}
}

/// A shared service, so that its owner can keep a handle (a test reading
/// what it recorded).
impl<S: Service> Service for std::sync::Arc<S> {
    fn body_limit(&self, method: &str, path: &str) -> usize {
        (**self).body_limit(method, path)
    }

    fn handle(&self, request: &Request) -> Reply {
        (**self).handle(request)
    }

    fn observe(&self, event: Event) {
        (**self).observe(event)
    }
}

/// What the server reports to [`Service::observe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// An answer with this status was written (the handler's or the server's).
    Answered(u16),
    /// A connection was refused with 503 beyond a cap.
    Refused(Cap),
    /// A head over the size or header-count limit (431).
    HeadTooLarge,
    /// A body over the route's limit (413).
    BodyTooLarge,
    /// A connection was cut by a timeout while it owed us something.
    TimedOut(Phase),
}

/// Which connection cap refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cap {
    Total,
    PerSource,
}

/// Where a connection was when it timed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Head,
    Body,
    Write,
}

/// One request, read whole.
#[derive(Debug)]
pub struct Request {
    head: Head,
    body: Vec<u8>,
    local_addr: SocketAddr,
}

impl Request {
    /// A request read whole on a connection to `local_addr`.
    pub fn new(head: Head, body: Vec<u8>, local_addr: SocketAddr) -> Self {
        Request {
            head,
            body,
            local_addr,
        }
    }

    pub fn method(&self) -> &str {
        &self.head.method
    }

    /// Path and query as sent.
    pub fn url(&self) -> &str {
        &self.head.target
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.head.path()
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub(crate) fn minor_version(&self) -> u8 {
        self.head.minor_version
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Whether the client keeps the connection open after this request.
    pub fn keep_alive(&self) -> bool {
        self.head.keep_alive()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// An answer built in memory: every raftlb answer is small (a prime, a note of
/// at most 32 KiB, a status page). The server adds `Content-Length` and
/// `Connection` itself.
#[derive(Clone, Debug)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    /// A reply with no headers yet.
    pub fn new(status: u16, body: Vec<u8>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body,
        }
    }

    pub(crate) fn status_code(&self) -> u16 {
        self.status
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
const APPLICATION_JSON: &str = "application/json";

/// A reply with `status` and a `text/plain; charset=utf-8` body.
pub fn text(status: u16, body: impl Into<String>) -> Reply {
    with_header(
        Reply::new(status, body.into().into_bytes()),
        "Content-Type",
        TEXT_PLAIN,
    )
}

/// A reply with `status` and `value` as an `application/json` body.
pub fn json(status: u16, value: &impl serde::Serialize) -> Reply {
    match serde_json::to_vec(value) {
        Ok(body) => with_header(Reply::new(status, body), "Content-Type", APPLICATION_JSON),
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
pub fn with_header(mut reply: Reply, name: &str, value: &str) -> Reply {
    let name_ok = !name.is_empty() && name.bytes().all(is_token_byte);
    let value_ok = value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f));
    if name_ok && value_ok {
        reply.headers.push((name.to_string(), value.to_string()));
    } else {
        log::warn!("left out an invalid reply header {name:?}: {value:?}");
    }
    reply
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Client input quoted in an answer or a log line is cut short, so a huge
/// URL cannot make a huge answer.
fn shorten(text: &str) -> String {
    const CHARS_MAX: usize = 64;
    match text.char_indices().nth(CHARS_MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

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
