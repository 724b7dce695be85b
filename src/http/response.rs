//! Reading one HTTP/1.1 response from a keep-alive connection, for the hot
//! paths where a general client costs more than the request itself.
//!
//! A node forwards every prime request to a worker; with ureq that forward was
//! 55% of the node's CPU under load (perf: the pool's key comparisons, a
//! liveness probe of two `ioctl`s and a failed `recv` per call, timeouts set
//! again per call, and allocations). The forwarder (`server::upstream`) writes
//! its one-line request itself and reads the answer with [`read`]. What it
//! reads is bounded: the head by [`MAX_HEAD_BYTES`], the body by the caller.
//!
//! Supported: a status line, headers, a body framed by `Content-Length`, by
//! `Transfer-Encoding: chunked`, or (with `Connection: close`) by the end of the
//! stream. Anything else is an error with a short reason, never a panic.

use std::io::{self, Read};

/// A response head longer than this is not one a worker sends.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// One response, read whole.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The connection cannot carry another request: the server said
    /// `Connection: close`, or the body ran to the end of the stream.
    pub close: bool,
}

/// Why no response could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The stream ended (or was reset) before the first byte of a response: on
    /// a pooled keep-alive connection, the server had closed it while idle, so
    /// the request can be sent again on a new one.
    ClosedBeforeAnswer,
    /// The OS said no after the answer began (a timeout is `WouldBlock` or
    /// `TimedOut`).
    Io(io::Error),
    /// What arrived is not an HTTP/1.1 response we can frame.
    Malformed(&'static str),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::ClosedBeforeAnswer => write!(f, "connection closed before an answer"),
            ReadError::Io(e) if is_timeout(e) => write!(f, "timed out"),
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Malformed(why) => write!(f, "bad answer: {why}"),
        }
    }
}

/// Whether an I/O error is a socket timeout (Linux reports `WouldBlock`).
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// How the body is delimited.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// The parts of a head that matter here.
struct Head {
    status: u16,
    framing: Framing,
    close: bool,
    /// Bytes of the head, including the blank line.
    len: usize,
}

/// Reads one response from `stream`, with `buf` as scratch space (kept by the
/// caller so that a connection reuses its buffer). A body over `max_body` bytes
/// is `Malformed`.
pub fn read(
    stream: &mut impl Read,
    buf: &mut Vec<u8>,
    max_body: usize,
) -> Result<Response, ReadError> {
    buf.clear();
    let head = loop {
        if let Some(head) = parse_head(buf)? {
            break head;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(ReadError::Malformed("head too long"));
        }
        if fill(stream, buf)? == 0 {
            return Err(if buf.is_empty() {
                ReadError::ClosedBeforeAnswer
            } else {
                ReadError::Malformed("stream ended inside the head")
            });
        }
    };
    let (body, close) = match head.framing {
        Framing::Length(len) if len > max_body => {
            return Err(ReadError::Malformed("body too long"))
        }
        Framing::Length(len) => {
            while buf.len() < head.len + len {
                if fill(stream, buf)? == 0 {
                    return Err(ReadError::Malformed("stream ended inside the body"));
                }
            }
            // Bytes past the body would be an answer nobody asked for.
            let extra = buf.len() > head.len + len;
            (buf[head.len..head.len + len].to_vec(), head.close || extra)
        }
        Framing::Chunked => (read_chunked(stream, buf, head.len, max_body)?, head.close),
        Framing::UntilClose => {
            while fill(stream, buf)? > 0 {
                if buf.len() - head.len > max_body {
                    return Err(ReadError::Malformed("body too long"));
                }
            }
            (buf[head.len..].to_vec(), true)
        }
    };
    Ok(Response {
        status: head.status,
        body,
        close,
    })
}

/// Appends what the stream has (at least one byte unless it ended) to `buf`.
fn fill(stream: &mut impl Read, buf: &mut Vec<u8>) -> Result<usize, ReadError> {
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if buf.is_empty() && is_reset(&e) => return Err(ReadError::ClosedBeforeAnswer),
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// The head, once `buf` holds all of it.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, ReadError> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let text =
        std::str::from_utf8(&buf[..end]).map_err(|_| ReadError::Malformed("head is not text"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(ReadError::Malformed("no status line"));
    }
    let status = code
        .parse()
        .map_err(|_| ReadError::Malformed("no status code"))?;
    let mut length = None;
    let (mut chunked, mut close) = (false, version == "HTTP/1.0");
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or(ReadError::Malformed("header without a colon"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let len: usize = value
                .parse()
                .map_err(|_| ReadError::Malformed("bad Content-Length"))?;
            if length.is_some_and(|l| l != len) {
                return Err(ReadError::Malformed("two Content-Lengths"));
            }
            length = Some(len);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
            if !chunked {
                return Err(ReadError::Malformed("unknown Transfer-Encoding"));
            }
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    // 1xx, 204 and 304 have no body whatever the headers say.
    let bodiless = status < 200 || status == 204 || status == 304;
    let framing = match (bodiless, chunked, length) {
        (true, _, _) => Framing::Length(0),
        (false, true, _) => Framing::Chunked,
        (false, false, Some(len)) => Framing::Length(len),
        (false, false, None) if close => Framing::UntilClose,
        (false, false, None) => {
            return Err(ReadError::Malformed(
                "no body length on a kept-alive connection",
            ))
        }
    };
    Ok(Some(Head {
        status,
        framing,
        close,
        len: end + 4,
    }))
}

/// Decodes a chunked body that starts at `buf[start..]`, reading more as needed.
fn read_chunked(
    stream: &mut impl Read,
    buf: &mut Vec<u8>,
    start: usize,
    max_body: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    let mut at = start;
    loop {
        let Some(line_end) = find(&buf[at..], b"\r\n").map(|i| at + i) else {
            if buf.len() - at > 64 {
                return Err(ReadError::Malformed("chunk size line too long"));
            }
            more(stream, buf)?;
            continue;
        };
        let size_text = std::str::from_utf8(&buf[at..line_end])
            .map_err(|_| ReadError::Malformed("bad chunk size"))?;
        let size_hex = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| ReadError::Malformed("bad chunk size"))?;
        if body.len() + size > max_body {
            return Err(ReadError::Malformed("body too long"));
        }
        if size == 0 {
            return skip_trailer(stream, buf, line_end + 2).map(|()| body);
        }
        let data_end = line_end + 2 + size;
        while buf.len() < data_end + 2 {
            more(stream, buf)?;
        }
        if &buf[data_end..data_end + 2] != b"\r\n" {
            return Err(ReadError::Malformed("chunk without its CRLF"));
        }
        body.extend_from_slice(&buf[line_end + 2..data_end]);
        at = data_end + 2;
    }
}

/// Reads past the trailer lines (if any) and the final blank line.
fn skip_trailer(stream: &mut impl Read, buf: &mut Vec<u8>, mut at: usize) -> Result<(), ReadError> {
    loop {
        match find(&buf[at..], b"\r\n") {
            Some(0) => return Ok(()),
            Some(i) => at += i + 2,
            None if buf.len() - at > MAX_HEAD_BYTES => {
                return Err(ReadError::Malformed("trailer too long"))
            }
            None => more(stream, buf)?,
        }
    }
}

/// Like [`fill`], but the end of the stream is an error: the body is not over.
fn more(stream: &mut impl Read, buf: &mut Vec<u8>) -> Result<(), ReadError> {
    match fill(stream, buf)? {
        0 => Err(ReadError::Malformed("stream ended inside the body")),
        _ => Ok(()),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that hands out its bytes a few at a time, to exercise every
    /// "read more" path.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(self.data.len()).min(out.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn parse(bytes: &[u8]) -> Result<Response, ReadError> {
        let mut last = None;
        for step in [1, 3, 7, 4096] {
            let mut stream = Trickle { data: bytes, step };
            let result = read(&mut stream, &mut Vec::new(), 1024);
            if let (Some(Ok(a)), Ok(b)) = (&last, &result) {
                assert_eq!(a, b, "the same answer however the bytes arrive");
            }
            last = Some(result);
        }
        last.expect("four runs")
    }

    #[test]
    fn content_length_body_is_read_exactly() {
        let r =
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nServer: x\r\n\r\n541").expect("valid");
        assert_eq!(
            (r.status, r.body.as_slice(), r.close),
            (200, &b"541"[..], false)
        );
    }

    #[test]
    fn chunked_body_with_a_trailer_is_decoded() {
        let bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\n104\r\n3\r\n729\r\n0\r\nX-T: 1\r\n\r\n";
        let r = parse(bytes).expect("valid");
        assert_eq!(r.body, b"104729");
        assert!(!r.close);
    }

    #[test]
    fn connection_close_is_reported_and_may_frame_the_body() {
        let r = parse(b"HTTP/1.1 503 Busy\r\nConnection: close\r\n\r\nno").expect("valid");
        assert_eq!(
            (r.status, r.body.as_slice(), r.close),
            (503, &b"no"[..], true)
        );
        let r = parse(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").expect("valid");
        assert!(r.close, "HTTP/1.0 closes unless told otherwise");
    }

    #[test]
    fn an_empty_stream_is_a_closed_connection_not_garbage() {
        assert!(matches!(parse(b""), Err(ReadError::ClosedBeforeAnswer)));
        assert!(matches!(parse(b"HTTP/1.1 2"), Err(ReadError::Malformed(_))));
    }

    #[test]
    fn garbage_and_oversize_answers_are_errors() {
        let bad: &[&[u8]] = &[
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\nContent-Length: 1\r\n\r\nx",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\nbody without a length",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
        ];
        for bytes in bad {
            let result = parse(bytes);
            assert!(
                matches!(result, Err(ReadError::Malformed(_))),
                "{:?} gave {result:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let endless_head = [b'x'; MAX_HEAD_BYTES + 100];
        assert!(matches!(
            parse(&endless_head),
            Err(ReadError::Malformed("head too long"))
        ));
    }

    #[test]
    fn bytes_after_the_body_make_the_connection_unusable() {
        // Seen only when they arrive with the answer, so read it in one go.
        let mut stream = Trickle {
            data: b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n7HTTP/1.1",
            step: 4096,
        };
        let r = read(&mut stream, &mut Vec::new(), 1024).expect("valid");
        assert_eq!(r.body, b"7");
        assert!(r.close);
    }
}
