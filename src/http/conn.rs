//! One keep-alive HTTP/1.1 client connection on `std::net::TcpStream`: write
//! a request built beforehand, read the status line and headers, skip or keep
//! the body, keep the socket for the next request. Two hot paths use it: a
//! node forwarding every prime request to a worker (`server::upstream`), and
//! the load generator (`client::bench`), which shares two cores with what it
//! measures.
//!
//! Not ureq, because on those paths a general client costs more than the
//! request: forwarding through ureq was 55% of a node's CPU under load (perf:
//! the pool's key comparisons, a liveness probe of two `ioctl`s and a failed
//! `recv` per call, timeouts set again per call, allocations). Here a request
//! costs one `write` and, usually, one `read`, with no allocation. Framing
//! follows RFC 9112 for what servers send back (`Content-Length`,
//! `Transfer-Encoding: chunked`, a body up to the close, `Connection: close`,
//! HTTP/1.0), and every bound is explicit: a head over 16 KiB, a body over its
//! limit, a chunk size that is not hex are errors, never a panic or a wait
//! without end. A reused connection that fails before the first byte of an
//! answer (the server closed it while idle) is retried once on a new one, so
//! it is for idempotent requests or requests whose repeat is harmless.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::Range;
use std::time::{Duration, Instant};

/// Largest response head (status line and headers, and trailers) accepted.
pub(crate) const HEAD_BYTES_MAX: usize = 16 * 1024;
/// Largest response body accepted: bench answers are a prime or a short line.
pub(crate) const BODY_BYTES_MAX: usize = 1024 * 1024;
/// A chunk-size line (hex digits, maybe extensions) longer than this is garbage.
const CHUNK_LINE_BYTES_MAX: usize = 1024;
/// The read buffer: room for the largest head plus a good read of body.
const BUFFER_BYTES: usize = 2 * HEAD_BYTES_MAX;
/// The socket's read timeout is lowered to what is left of a request's budget
/// only when that saves more than this, so that the usual answer in one read
/// costs no extra system call.
const READ_TIMEOUT_SLACK: Duration = Duration::from_millis(100);

/// Why a request got no status, as the report counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NoAnswer {
    /// The TCP connection could not be opened (refused, unreachable, timed out).
    Connect,
    /// The request's time budget ran out while writing or reading.
    Timeout,
    /// The connection broke or was closed before the whole answer arrived.
    Io,
    /// The answer was not well-formed HTTP/1.x, or over a limit.
    Framing,
}

impl NoAnswer {
    /// The name in the report's `failures`.
    pub fn name(self) -> &'static str {
        match self {
            NoAnswer::Connect => "connect",
            NoAnswer::Timeout => "timeout",
            NoAnswer::Io => "io",
            NoAnswer::Framing => "framing",
        }
    }
}

/// A failed request: its kind, and a one-line reason for the user.
#[derive(Debug)]
pub struct Error {
    pub failure: NoAnswer,
    pub detail: String,
}

impl Error {
    fn new(failure: NoAnswer, detail: impl Into<String>) -> Error {
        Error {
            failure,
            detail: detail.into(),
        }
    }

    fn framing(detail: &str) -> Error {
        Error::new(NoAnswer::Framing, detail)
    }

    /// A socket error: a timeout if the socket's timeout fired.
    fn io(e: &io::Error) -> Error {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                Error::new(NoAnswer::Timeout, "no answer in time")
            }
            _ => Error::new(NoAnswer::Io, e.to_string()),
        }
    }
}

/// How the body of a response is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Body {
    /// 1xx, 204, 304: no body whatever the headers say.
    Empty,
    Length(usize),
    Chunked,
    /// Neither length nor chunked: the body runs to the server's close.
    UntilClose,
}

/// What the head of a response says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    body: Body,
    /// The server closes the connection after this response.
    close: bool,
}

/// One connection to the target, reopened when the server closes it or a
/// request fails; its buffer lives as long as the `Conn`.
pub(crate) struct Conn {
    /// Where to connect: resolved once, before the load starts.
    addr: SocketAddr,
    /// Each request's budget, from connecting to the last byte of the body.
    timeout: Duration,
    /// Connecting gets at most this much of the budget.
    connect_timeout: Duration,
    stream: Option<TcpStream>,
    /// The socket's read timeout as last set (see `READ_TIMEOUT_SLACK`).
    read_timeout: Duration,
    buf: Box<[u8]>,
    /// The bytes read but not yet parsed are `buf[start..end]`.
    start: usize,
    end: usize,
    /// Whether any byte of the current answer arrived: a reused connection that
    /// fails before any did was likely closed idle by the server, and the
    /// request is tried once more on a new one.
    received: bool,
    /// The body of the last answer, when asked for (`exchange_keeping_body`).
    body: Vec<u8>,
    /// Keep the body, up to this many bytes; None skips it.
    keep_body: Option<usize>,
}

impl Conn {
    /// A connection to `addr` whose requests each get `timeout`; it connects on
    /// the first request.
    pub fn new(addr: SocketAddr, timeout: Duration) -> Conn {
        Conn {
            addr,
            timeout,
            connect_timeout: timeout,
            stream: None,
            read_timeout: timeout,
            buf: vec![0; BUFFER_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
            received: false,
            body: Vec::new(),
            keep_body: None,
        }
    }

    /// Connecting gets at most `limit`, whatever the request's budget.
    pub(crate) fn with_connect_timeout(mut self, limit: Duration) -> Conn {
        self.connect_timeout = limit;
        self
    }

    /// The budget of the requests from now on.
    pub(crate) fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Whether the connection is open, so worth keeping for another request.
    pub(crate) fn is_open(&self) -> bool {
        self.stream.is_some()
    }

    /// Like [`Conn::exchange`], and returns the body too, which must fit in
    /// `max_body` bytes (beyond it, a framing error).
    pub(crate) fn exchange_keeping_body(
        &mut self,
        request: &[u8],
        max_body: usize,
    ) -> Result<(u16, &[u8]), Error> {
        self.keep_body = Some(max_body);
        let result = self.exchange(request);
        self.keep_body = None;
        result.map(|status| (status, self.body.as_slice()))
    }

    /// Sends `request` (a whole HTTP/1.1 request) and reads the answer; its
    /// status, whatever it is. After an error the connection is closed, and
    /// the next request opens a new one.
    pub fn exchange(&mut self, request: &[u8]) -> Result<u16, Error> {
        let deadline = Instant::now() + self.timeout;
        let reused = self.stream.is_some();
        let mut result = self.attempt(request, deadline);
        if let Err(e) = &result {
            self.close();
            if reused && !self.received && e.failure == NoAnswer::Io {
                result = self.attempt(request, deadline);
                if result.is_err() {
                    self.close();
                }
            }
        }
        result
    }

    fn close(&mut self) {
        self.stream = None;
        self.start = 0;
        self.end = 0;
    }

    fn attempt(&mut self, request: &[u8], deadline: Instant) -> Result<u16, Error> {
        self.received = false;
        self.body.clear();
        match &self.stream {
            None => self.connect(deadline)?,
            Some(stream) if self.read_timeout != self.timeout => {
                // A slow answer lowered it: this request gets its whole budget.
                stream
                    .set_read_timeout(Some(self.timeout))
                    .map_err(|e| Error::io(&e))?;
                self.read_timeout = self.timeout;
            }
            Some(_) => {}
        }
        let stream = self.stream.as_mut().expect("connected just above");
        stream.write_all(request).map_err(|e| Error::io(&e))?;
        self.read_response(deadline)
    }

    fn connect(&mut self, deadline: Instant) -> Result<(), Error> {
        let left = time_left(deadline)?.min(self.connect_timeout);
        let failed = |e: io::Error| Error::new(NoAnswer::Connect, e.to_string());
        let stream = TcpStream::connect_timeout(&self.addr, left).map_err(failed)?;
        // Requests are small and each waits for its answer: Nagle would only delay.
        stream.set_nodelay(true).map_err(failed)?;
        stream
            .set_read_timeout(Some(self.timeout))
            .map_err(failed)?;
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(failed)?;
        self.read_timeout = self.timeout;
        self.start = 0;
        self.end = 0;
        self.stream = Some(stream);
        Ok(())
    }

    /// Reads one whole response (after any interim 1xx) and returns its status.
    fn read_response(&mut self, deadline: Instant) -> Result<u16, Error> {
        loop {
            let head = self.read_head(deadline)?;
            if (100..200).contains(&head.status) && head.status != 101 {
                continue;
            }
            match head.body {
                Body::Empty => {}
                Body::Length(n) => self.skip(n, deadline)?,
                Body::Chunked => self.skip_chunked(deadline)?,
                Body::UntilClose => self.skip_until_close(deadline)?,
            }
            if head.close || head.body == Body::UntilClose {
                self.close();
            }
            return Ok(head.status);
        }
    }

    fn read_head(&mut self, deadline: Instant) -> Result<Head, Error> {
        // Bytes already searched, relative to `start` (a fill may move them).
        let mut searched = 0;
        loop {
            let from = self.start + searched;
            if let Some(at) = find(&self.buf[from..self.end], b"\r\n\r\n") {
                let head_end = from + at + 4;
                let head = parse_head(&self.buf[self.start..head_end])?;
                self.start = head_end;
                return Ok(head);
            }
            if self.end - self.start >= HEAD_BYTES_MAX {
                return Err(Error::framing("response head over 16 KiB"));
            }
            searched = (self.end - self.start).saturating_sub(3);
            self.more(deadline)?;
        }
    }

    /// The next line (without its CRLF), at most `limit` bytes; consumed.
    fn line(&mut self, limit: usize, deadline: Instant) -> Result<Range<usize>, Error> {
        let mut searched = 0;
        loop {
            let from = self.start + searched;
            if let Some(at) = find(&self.buf[from..self.end], b"\r\n") {
                let line = self.start..from + at;
                self.start = from + at + 2;
                return Ok(line);
            }
            if self.end - self.start > limit + 1 {
                return Err(Error::framing("chunked body: line too long"));
            }
            searched = (self.end - self.start).saturating_sub(1);
            self.more(deadline)?;
        }
    }

    /// Skips `n` bytes of body, keeping them if asked to.
    fn skip(&mut self, mut n: usize, deadline: Instant) -> Result<(), Error> {
        loop {
            let take = n.min(self.end - self.start);
            self.keep(self.start..self.start + take)?;
            self.start += take;
            n -= take;
            if n == 0 {
                return Ok(());
            }
            self.more(deadline)?;
        }
    }

    fn skip_chunked(&mut self, deadline: Instant) -> Result<(), Error> {
        let mut body_bytes = 0;
        loop {
            let line = self.line(CHUNK_LINE_BYTES_MAX, deadline)?;
            let size = parse_chunk_size(&self.buf[line])?;
            if size == 0 {
                return self.skip_trailers(deadline);
            }
            body_bytes += size;
            if body_bytes > BODY_BYTES_MAX {
                return Err(Error::framing("response body over 1 MiB"));
            }
            self.skip(size, deadline)?;
            if !self.line(0, deadline)?.is_empty() {
                return Err(Error::framing("chunked body: chunk longer than its size"));
            }
        }
    }

    /// The trailer fields after the last chunk, up to the empty line.
    fn skip_trailers(&mut self, deadline: Instant) -> Result<(), Error> {
        let mut trailer_bytes = 0;
        loop {
            let line = self.line(HEAD_BYTES_MAX, deadline)?;
            if line.is_empty() {
                return Ok(());
            }
            trailer_bytes += line.len() + 2;
            if trailer_bytes > HEAD_BYTES_MAX {
                return Err(Error::framing("response trailers over 16 KiB"));
            }
        }
    }

    /// Adds `range` of the buffer to the kept body, within its limit.
    fn keep(&mut self, range: Range<usize>) -> Result<(), Error> {
        let Some(limit) = self.keep_body else {
            return Ok(());
        };
        if self.body.len() + range.len() > limit {
            return Err(Error::framing("response body over its limit"));
        }
        self.body.extend_from_slice(&self.buf[range]);
        Ok(())
    }

    fn skip_until_close(&mut self, deadline: Instant) -> Result<(), Error> {
        let mut body_bytes = 0;
        loop {
            self.keep(self.start..self.end)?;
            body_bytes += self.end - self.start;
            self.start = self.end;
            if body_bytes > BODY_BYTES_MAX {
                return Err(Error::framing("response body over 1 MiB"));
            }
            if !self.fill(deadline)? {
                return Ok(());
            }
        }
    }

    /// Reads more bytes; the server closing here cuts the answer short.
    fn more(&mut self, deadline: Instant) -> Result<(), Error> {
        if self.fill(deadline)? {
            Ok(())
        } else {
            Err(Error::new(NoAnswer::Io, "connection closed by the server"))
        }
    }

    /// Reads what the socket has into the buffer; false at the end of stream.
    fn fill(&mut self, deadline: Instant) -> Result<bool, Error> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        // The callers' limits (head, line) are below the buffer's size.
        assert!(self.end < self.buf.len(), "read buffer full");
        let left = time_left(deadline)?;
        let stream = self.stream.as_mut().expect("reads follow a connect");
        if left + READ_TIMEOUT_SLACK < self.read_timeout {
            stream
                .set_read_timeout(Some(left))
                .map_err(|e| Error::io(&e))?;
            self.read_timeout = left;
        }
        loop {
            match stream.read(&mut self.buf[self.end..]) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.end += n;
                    self.received = true;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(&e)),
            }
        }
    }
}

/// What is left of a request's budget; a timeout when nothing is.
fn time_left(deadline: Instant) -> Result<Duration, Error> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|left| !left.is_zero())
        .ok_or_else(|| Error::new(NoAnswer::Timeout, "no answer in time"))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses a head ending with its empty line: status line, then header fields.
fn parse_head(bytes: &[u8]) -> Result<Head, Error> {
    let bytes = bytes.strip_suffix(b"\r\n\r\n").unwrap_or(bytes);
    let mut lines = bytes.split(|b| *b == b'\n').map(|l| l.trim_ascii_end());
    let (status, http_1_0) = parse_status_line(lines.next().unwrap_or_default())?;
    let (mut length, mut chunked, mut close, mut keep_alive) = (None, false, false, false);
    for line in lines {
        let colon = line
            .iter()
            .position(|b| *b == b':')
            .ok_or_else(|| Error::framing("response header line without a colon"))?;
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_length(value)?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::framing("two different Content-Length headers"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = value.rsplit(|b| *b == b',').next().unwrap_or_default();
            if !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(Error::framing("unsupported Transfer-Encoding"));
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let body = match (status, chunked, length) {
        (100..=199 | 204 | 304, _, _) => Body::Empty,
        (_, true, _) => Body::Chunked,
        (_, false, Some(n)) => Body::Length(n),
        (_, false, None) => Body::UntilClose,
    };
    let close = close || (http_1_0 && !keep_alive);
    Ok(Head {
        status,
        body,
        close,
    })
}

/// `HTTP/1.1 200 OK` -> (200, false); `HTTP/1.0 …` -> (…, true).
fn parse_status_line(line: &[u8]) -> Result<(u16, bool), Error> {
    let bad = || Error::framing("no HTTP/1.x status line");
    let rest = line.strip_prefix(b"HTTP/1.").ok_or_else(bad)?;
    let (version, rest) = rest.split_first().ok_or_else(bad)?;
    let code = rest.strip_prefix(b" ").ok_or_else(bad)?;
    if !matches!(version, b'0' | b'1')
        || code.len() < 3
        || !code[..3].iter().all(u8::is_ascii_digit)
        || code.get(3).is_some_and(|b| *b != b' ')
    {
        return Err(bad());
    }
    let status = code[..3]
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    Ok((status, *version == b'0'))
}

/// A Content-Length: decimal digits, at most `BODY_BYTES_MAX`.
fn parse_length(value: &[u8]) -> Result<usize, Error> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(Error::framing("Content-Length is not a number"));
    }
    let mut n: usize = 0;
    for d in value {
        n = n * 10 + usize::from(d - b'0');
        if n > BODY_BYTES_MAX {
            return Err(Error::framing("response body over 1 MiB"));
        }
    }
    Ok(n)
}

/// A chunk-size line: hex digits, then maybe `;extensions`.
fn parse_chunk_size(line: &[u8]) -> Result<usize, Error> {
    let digits = line.split(|b| *b == b';').next().unwrap_or_default();
    let digits = digits.trim_ascii();
    // Eight hex digits already exceed the body limit; more could overflow.
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(Error::framing("chunked body: chunk size is not hex"));
    }
    let text = std::str::from_utf8(digits).expect("hex digits are ASCII");
    usize::from_str_radix(text, 16).map_err(|_| Error::framing("chunked body: bad chunk size"))
}

#[cfg(test)]
mod tests;
