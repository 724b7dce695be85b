//! One connection on its own thread: read a head, read the body the route
//! allows, call the service, write the answer; again while the connection is
//! kept alive. At most one pipelined request is in flight per connection: the
//! next one is not read until this one's answer is written, so a client that
//! pipelines thousands of requests and never reads holds one request's work and
//! a read buffer of `head_bytes_max`, and is cut by the write timeout once its
//! receive window is full.
//!
//! Every wait has a deadline for the whole phase (not per read, so a byte every
//! half second does not extend it): the head from the connection's accept or
//! the request's first byte, the body from the end of the head, the answer from
//! its first byte. A socket timeout is only changed when the one set would
//! overshoot the deadline by more than [`TIMEOUT_SLACK`], so the usual request
//! costs one `read` and one `write`. Nothing is allocated from what the client
//! declares: a body's buffer is sized only once its length is known to be within
//! the route's limit.
//!
//! When the server closes a connection after an answer, it shuts its writing
//! side and reads what the client still sends for a little while ("lingering
//! close"): closing with unread data would send a reset that can destroy the
//! answer before the client reads it (a 413 to a client still sending its body).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::head::{parse_head, Framing, Head, HeadError, HEADERS_MAX};
use super::{error, Event, Limits, Phase, Reply, Request, Service};

/// A socket timeout may let a deadline pass by this much before it is seen.
const TIMEOUT_SLACK: Duration = Duration::from_millis(50);
/// A chunk-size line (hex digits and maybe extensions) longer than this is garbage.
const CHUNK_LINE_BYTES_MAX: usize = 1024;
/// Lingering close: at most this long, and at most this many bytes read.
const LINGER_TIME: Duration = Duration::from_millis(500);
const LINGER_BYTES_MAX: usize = 256 * 1024;

/// What every connection of one server shares.
pub(super) struct Context {
    pub service: Box<dyn Service>,
    pub limits: Limits,
    pub stopping: Arc<AtomicBool>,
}

/// Why a connection ends before its next request.
enum End {
    /// The client closed, broke the connection, or stayed idle too long.
    Closed,
    /// The client owed us bytes (or did not read ours) past a deadline.
    TimedOut(Phase),
    /// Answer this, report the event, and close.
    Refuse(Reply, Option<Event>),
}

/// A read or write that did not complete.
enum Failed {
    TimedOut,
    Broken,
}

/// Serves one connection until it closes.
pub(super) fn serve_connection(stream: &TcpStream, remote: SocketAddr, context: &Context) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let limits = &context.limits;
    let mut conn = match Connection::new(stream, limits) {
        Ok(conn) => conn,
        Err(e) => return log::debug!("cannot set up a connection from {remote}: {e}"),
    };
    let mut fresh = true;
    loop {
        let request = match conn.read_request(fresh, local, context) {
            Ok(request) => request,
            Err(end) => return conn.end(end, context),
        };
        fresh = false;
        let reply = answer(&*context.service, &request);
        let close = !request.keep_alive() || context.stopping.load(Ordering::SeqCst);
        let deadline = Instant::now() + limits.write_timeout;
        let bytes = encode(&reply, &request, close);
        match conn.socket.write_all_by(&bytes, deadline) {
            Ok(()) => context
                .service
                .observe(Event::Answered(reply.status_code())),
            Err(Failed::TimedOut) => return conn.end(End::TimedOut(Phase::Write), context),
            Err(Failed::Broken) => return,
        }
        if close {
            return conn.linger();
        }
    }
}

/// The service's answer; a panic in it is a 500, not a lost connection thread.
fn answer(service: &dyn Service, request: &Request) -> Reply {
    panic::catch_unwind(AssertUnwindSafe(|| service.handle(request))).unwrap_or_else(|_| {
        log::error!(
            "http handler panicked on {} {}",
            request.method(),
            super::shorten(request.url())
        );
        error(500, "internal error")
    })
}

/// The socket with the timeouts currently set on it.
struct Socket<'a> {
    stream: &'a TcpStream,
    /// Zero after a timeout fired: set it again before the next call.
    read_timeout: Duration,
    write_timeout: Duration,
}

impl Socket<'_> {
    /// One read into `dst` by `deadline`; Ok(0) is end of file.
    fn read_by(&mut self, dst: &mut [u8], deadline: Instant) -> Result<usize, Failed> {
        loop {
            let left = time_left(deadline)?;
            if self.read_timeout.is_zero() || self.read_timeout > left + TIMEOUT_SLACK {
                self.stream
                    .set_read_timeout(Some(left))
                    .map_err(|_| Failed::Broken)?;
                self.read_timeout = left;
            }
            match (&mut &*self.stream).read(dst) {
                Ok(n) => return Ok(n),
                Err(e) if is_timeout(&e) => self.read_timeout = Duration::ZERO,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Failed::Broken),
            }
        }
    }

    /// Writes all of `src` by `deadline`.
    fn write_all_by(&mut self, mut src: &[u8], deadline: Instant) -> Result<(), Failed> {
        while !src.is_empty() {
            let left = time_left(deadline)?;
            if self.write_timeout.is_zero() || self.write_timeout > left + TIMEOUT_SLACK {
                self.stream
                    .set_write_timeout(Some(left))
                    .map_err(|_| Failed::Broken)?;
                self.write_timeout = left;
            }
            match (&mut &*self.stream).write(src) {
                Ok(0) => return Err(Failed::Broken),
                Ok(n) => src = &src[n..],
                Err(e) if is_timeout(&e) => self.write_timeout = Duration::ZERO,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Failed::Broken),
            }
        }
        Ok(())
    }
}

/// What is left until `deadline` (at least a millisecond: a zero socket
/// timeout means none), or TimedOut once it has passed.
fn time_left(deadline: Instant) -> Result<Duration, Failed> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(left) if !left.is_zero() => Ok(left.max(Duration::from_millis(1))),
        _ => Err(Failed::TimedOut),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A connection's socket and its read buffer: `buf[start..end]` is read and
/// not yet used (the rest of a head, a body, the next pipelined request).
struct Connection<'a> {
    socket: Socket<'a>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl<'a> Connection<'a> {
    fn new(stream: &'a TcpStream, limits: &Limits) -> io::Result<Connection<'a>> {
        // Answers are written whole in one call: nothing to gain from Nagle.
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(limits.head_timeout))?;
        stream.set_write_timeout(Some(limits.write_timeout))?;
        Ok(Connection {
            socket: Socket {
                stream,
                read_timeout: limits.head_timeout,
                write_timeout: limits.write_timeout,
            },
            buf: vec![0; limits.head_bytes_max.max(CHUNK_LINE_BYTES_MAX)],
            start: 0,
            end: 0,
        })
    }

    fn unread(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Reads more into the buffer by `deadline`; Ok(0) is end of file. The
    /// caller makes sure the buffer is not full of unread bytes.
    fn fill(&mut self, deadline: Instant) -> Result<usize, Failed> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Err(Failed::Broken);
        }
        let n = self.socket.read_by(&mut self.buf[self.end..], deadline)?;
        self.end += n;
        Ok(n)
    }

    /// The next request, with its whole body.
    fn read_request(
        &mut self,
        fresh: bool,
        local: SocketAddr,
        context: &Context,
    ) -> Result<Request, End> {
        let limits = &context.limits;
        let head = self.read_head(fresh, limits)?;
        let limit = context.service.body_limit(&head.method, head.path());
        let body = self.read_body(&head, limit, limits)?;
        Ok(Request::new(head, body, local))
    }

    /// Reads a head. A fresh connection has `head_timeout` from now; a kept-
    /// alive one may first wait `idle_timeout` for the request's first byte.
    fn read_head(&mut self, fresh: bool, limits: &Limits) -> Result<Head, End> {
        let mut idle = !fresh && self.unread().is_empty();
        let first_wait = if idle {
            limits.idle_timeout
        } else {
            limits.head_timeout
        };
        let mut deadline = Instant::now() + first_wait;
        loop {
            if !self.unread().is_empty() {
                match parse_head(self.unread()) {
                    Ok(Some((head, len))) => {
                        self.start += len;
                        return Ok(head);
                    }
                    Ok(None) if self.unread().len() >= limits.head_bytes_max => {
                        return Err(head_too_large(limits));
                    }
                    Ok(None) => {}
                    Err(HeadError::TooManyHeaders) => return Err(head_too_large(limits)),
                    Err(e) => return Err(End::Refuse(error(e.status(), &e.to_string()), None)),
                }
            }
            match self.fill(deadline) {
                Ok(0) | Err(Failed::Broken) => return Err(End::Closed),
                Ok(_) if idle => {
                    idle = false;
                    deadline = Instant::now() + limits.head_timeout;
                }
                Ok(_) => {}
                Err(Failed::TimedOut) if idle => return Err(End::Closed),
                Err(Failed::TimedOut) => return Err(End::TimedOut(Phase::Head)),
            }
        }
    }

    /// Reads the body `head` declares, if within `limit`.
    fn read_body(&mut self, head: &Head, limit: usize, limits: &Limits) -> Result<Vec<u8>, End> {
        if let Some(expect) = head.header("expect") {
            if !expect.eq_ignore_ascii_case("100-continue") {
                let reason = format!("cannot meet expect: {}", super::shorten(expect));
                return Err(End::Refuse(error(417, &reason), None));
            }
        }
        let deadline = Instant::now() + limits.body_timeout;
        match head.framing {
            Framing::Length(0) => Ok(Vec::new()),
            Framing::Length(declared) if declared > limit as u64 => Err(body_too_large(limit)),
            Framing::Length(declared) => {
                self.send_continue(head, deadline)?;
                // Within the route's limit, so within what the service chose.
                let mut body = vec![0; declared as usize];
                self.read_exact(&mut body, deadline)?;
                Ok(body)
            }
            Framing::Chunked => {
                self.send_continue(head, deadline)?;
                self.read_chunked(limit, deadline)
            }
        }
    }

    /// `100 Continue` when the client waits for it (curl does, for bodies
    /// over 1 KiB) and has not sent the body yet.
    fn send_continue(&mut self, head: &Head, deadline: Instant) -> Result<(), End> {
        if head.minor_version == 0 || !head.has_token("expect", "100-continue") {
            return Ok(());
        }
        if !self.unread().is_empty() {
            return Ok(());
        }
        match self
            .socket
            .write_all_by(b"HTTP/1.1 100 Continue\r\n\r\n", deadline)
        {
            Ok(()) => Ok(()),
            Err(Failed::TimedOut) => Err(End::TimedOut(Phase::Write)),
            Err(Failed::Broken) => Err(End::Closed),
        }
    }

    /// Fills `dst` from the buffer, then straight from the socket.
    fn read_exact(&mut self, dst: &mut [u8], deadline: Instant) -> Result<(), End> {
        let buffered = self.unread().len().min(dst.len());
        dst[..buffered].copy_from_slice(&self.buf[self.start..self.start + buffered]);
        self.start += buffered;
        let mut done = buffered;
        while done < dst.len() {
            match self.socket.read_by(&mut dst[done..], deadline) {
                Ok(0) | Err(Failed::Broken) => return Err(End::Closed),
                Ok(n) => done += n,
                Err(Failed::TimedOut) => return Err(End::TimedOut(Phase::Body)),
            }
        }
        Ok(())
    }

    /// A chunked body (RFC 9112 section 7.1), at most `limit` bytes of data;
    /// extensions are ignored and trailers read and dropped.
    fn read_chunked(&mut self, limit: usize, deadline: Instant) -> Result<Vec<u8>, End> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line(deadline)?;
            let size = parse_chunk_size(&line).ok_or_else(|| bad_body("bad chunk size line"))?;
            if size == 0 {
                break;
            }
            if size > (limit - body.len()) as u64 {
                return Err(body_too_large(limit));
            }
            let at = body.len();
            body.resize(at + size as usize, 0);
            self.read_exact(&mut body[at..], deadline)?;
            if !self.read_line(deadline)?.is_empty() {
                return Err(bad_body("chunk data longer than its size"));
            }
        }
        for _ in 0..=HEADERS_MAX {
            if self.read_line(deadline)?.is_empty() {
                return Ok(body);
            }
        }
        Err(bad_body("too many trailer lines"))
    }

    /// One line of a chunked body, without its CRLF.
    fn read_line(&mut self, deadline: Instant) -> Result<Vec<u8>, End> {
        loop {
            if let Some(at) = self.unread().iter().position(|b| *b == b'\n') {
                let line = &self.unread()[..at];
                let line = line.strip_suffix(b"\r").unwrap_or(line).to_vec();
                self.start += at + 1;
                return Ok(line);
            }
            if self.unread().len() >= CHUNK_LINE_BYTES_MAX {
                return Err(bad_body("chunk line too long"));
            }
            match self.fill(deadline) {
                Ok(0) | Err(Failed::Broken) => return Err(End::Closed),
                Ok(_) => {}
                Err(Failed::TimedOut) => return Err(End::TimedOut(Phase::Body)),
            }
        }
    }

    /// Ends the connection as `end` says, answering first if it says so.
    fn end(mut self, end: End, context: &Context) {
        match end {
            End::Closed => {}
            End::TimedOut(phase) => context.service.observe(Event::TimedOut(phase)),
            End::Refuse(reply, event) => {
                if let Some(event) = event {
                    context.service.observe(event);
                }
                let bytes = encode_parts(&reply, false, true, false);
                let deadline = Instant::now() + context.limits.write_timeout;
                match self.socket.write_all_by(&bytes, deadline) {
                    Ok(()) => {
                        context
                            .service
                            .observe(Event::Answered(reply.status_code()));
                        self.linger();
                    }
                    Err(Failed::TimedOut) => {
                        context.service.observe(Event::TimedOut(Phase::Write));
                    }
                    Err(Failed::Broken) => {}
                }
            }
        }
    }

    /// Shuts the writing side and drains what the client still sends, for at
    /// most [`LINGER_TIME`] and [`LINGER_BYTES_MAX`], so the close is not a reset.
    fn linger(mut self) {
        if self.socket.stream.shutdown(Shutdown::Write).is_err() {
            return;
        }
        let deadline = Instant::now() + LINGER_TIME;
        let mut drained = 0;
        while drained < LINGER_BYTES_MAX {
            self.start = 0;
            self.end = 0;
            match self.fill(deadline) {
                Ok(0) | Err(_) => return,
                Ok(n) => drained += n,
            }
        }
    }
}

fn head_too_large(limits: &Limits) -> End {
    let reason = format!(
        "request head over {} bytes or {HEADERS_MAX} header lines",
        limits.head_bytes_max
    );
    End::Refuse(error(431, &reason), Some(Event::HeadTooLarge))
}

fn body_too_large(limit: usize) -> End {
    let reason = format!("request body over {limit} bytes, the limit of this route");
    End::Refuse(error(413, &reason), Some(Event::BodyTooLarge))
}

fn bad_body(reason: &str) -> End {
    End::Refuse(
        error(400, &format!("malformed chunked body: {reason}")),
        None,
    )
}

/// The size on a chunk-size line: 1 to 16 hex digits, before any `;extension`.
fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    const HEX_DIGITS_MAX: usize = 16;
    let end = line.iter().position(|b| *b == b';').unwrap_or(line.len());
    let digits = std::str::from_utf8(&line[..end])
        .ok()?
        .trim_matches([' ', '\t']);
    if digits.is_empty() || digits.len() > HEX_DIGITS_MAX {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// The bytes of `reply` as the answer to `request`.
fn encode(reply: &Reply, request: &Request, close: bool) -> Vec<u8> {
    let is_head = request.method() == "HEAD";
    let keep_alive_1_0 = !close && request.minor_version() == 0;
    encode_parts(reply, is_head, close, keep_alive_1_0)
}

/// Status line, the reply's headers (the framing ones are the server's to
/// write), `Content-Length`, `Connection`, and the body unless it is HEAD.
fn encode_parts(reply: &Reply, is_head: bool, close: bool, keep_alive_1_0: bool) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut head = String::with_capacity(128);
    let status = reply.status_code();
    let _ = write!(head, "HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    for (name, value) in reply.headers() {
        let framing = ["content-length", "connection", "transfer-encoding"]
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f));
        if !framing {
            let _ = write!(head, "{name}: {value}\r\n");
        }
    }
    let _ = write!(head, "Content-Length: {}\r\n", reply.body().len());
    if close {
        head.push_str("Connection: close\r\n");
    } else if keep_alive_1_0 {
        head.push_str("Connection: keep-alive\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    if !is_head {
        bytes.extend_from_slice(reply.body());
    }
    bytes
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        303 => "See Other",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_short_hex_numbers() {
        assert_eq!(parse_chunk_size(b"1a"), Some(26));
        assert_eq!(parse_chunk_size(b"0;ext=1"), Some(0));
        assert_eq!(parse_chunk_size(b" 10 "), Some(16));
        for bad in [&b""[..], b"x", b"-1", b"11111111111111111", b"1 2"] {
            assert_eq!(parse_chunk_size(bad), None, "{bad:?}");
        }
    }
}
