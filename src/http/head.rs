//! The request head: parsed with `httparse` (the parser hyper uses), then
//! checked for what the server needs to frame the body safely.
//!
//! [`parse_head`] is pure (bytes in, a [`Head`] or a reason out) so that it can
//! be fed millions of hostile inputs in a test (`tests/http_fuzz.rs`). It
//! decides the body's framing here, once: a `Content-Length` that is not a
//! number, two that disagree, a `Content-Length` beside `Transfer-Encoding`
//! (the request-smuggling shape), or a transfer coding other than `chunked` are
//! errors with the status to answer, never a guess.

/// Header lines read at most; httparse wants a fixed array, and more is 431.
pub const HEADERS_MAX: usize = 64;

/// How the request's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length: N` (no header at all is a length of 0).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head. Header values that are not UTF-8 are kept lossily:
/// none of the values the server reads needs more than ASCII.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    /// The request target as sent: path and query.
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Names and values in the order sent.
    pub headers: Vec<(String, String)>,
    pub framing: Framing,
}

/// Why a head was refused; [`HeadError::status`] is the answer's code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1.x as RFC 9112 writes it.
    Malformed(String),
    /// More than [`HEADERS_MAX`] header lines.
    TooManyHeaders,
    /// A transfer coding the server does not decode.
    UnsupportedEncoding(String),
}

impl HeadError {
    pub fn status(&self) -> u16 {
        match self {
            HeadError::Malformed(_) => 400,
            HeadError::TooManyHeaders => 431,
            HeadError::UnsupportedEncoding(_) => 501,
        }
    }
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::Malformed(reason) => write!(f, "malformed request head: {reason}"),
            HeadError::TooManyHeaders => {
                write!(f, "request head has over {HEADERS_MAX} header lines")
            }
            HeadError::UnsupportedEncoding(coding) => write!(
                f,
                "transfer-encoding {coding:?} is not supported; send chunked or a content-length"
            ),
        }
    }
}

impl Head {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header (`Connection`, `Expect`) holds `token`.
    pub(crate) fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Whether the connection stays open after this request: HTTP/1.1 unless
    /// `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`.
    pub fn keep_alive(&self) -> bool {
        if self.minor_version == 0 {
            self.has_token("connection", "keep-alive")
        } else {
            !self.has_token("connection", "close")
        }
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// Parses the head at the start of `bytes`: `Ok(None)` while it is incomplete,
/// else the head and its length in bytes (the body, or the next pipelined
/// request, starts there). The caller bounds how many bytes it offers.
pub fn parse_head(bytes: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut request = httparse::Request::new(&mut slots);
    let len = match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(e) => return Err(HeadError::Malformed(e.to_string().to_lowercase())),
    };
    let (Some(method), Some(target), Some(minor_version)) =
        (request.method, request.path, request.version)
    else {
        return Err(HeadError::Malformed("incomplete request line".into()));
    };
    let headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|h| {
            let value = String::from_utf8_lossy(h.value).trim().to_string();
            (h.name.to_string(), value)
        })
        .collect();
    let framing = framing(&headers)?;
    let head = Head {
        method: method.to_string(),
        target: target.to_string(),
        minor_version,
        headers,
        framing,
    };
    Ok(Some((head, len)))
}

/// The body's framing from `Content-Length` and `Transfer-Encoding` (RFC 9112
/// section 6), refusing every ambiguous combination.
fn framing(headers: &[(String, String)]) -> Result<Framing, HeadError> {
    let named = |name: &'static str| {
        headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let mut codings = named("transfer-encoding")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .peekable();
    if codings.peek().is_some() {
        if named("content-length").next().is_some() {
            return Err(HeadError::Malformed(
                "both content-length and transfer-encoding".into(),
            ));
        }
        let codings: Vec<&str> = codings.collect();
        return match codings.as_slice() {
            [only] if only.eq_ignore_ascii_case("chunked") => Ok(Framing::Chunked),
            _ => Err(HeadError::UnsupportedEncoding(codings.join(", "))),
        };
    }
    let mut length = None;
    for value in named("content-length") {
        let parsed = parse_length(value)?;
        if length.is_some_and(|earlier| earlier != parsed) {
            return Err(HeadError::Malformed(
                "content-length values disagree".into(),
            ));
        }
        length = Some(parsed);
    }
    Ok(Framing::Length(length.unwrap_or(0)))
}

/// A content-length is 1 to 19 ASCII digits (no sign, no spaces inside): any
/// such number fits a u64, and a longer one is a lie nobody needs to parse.
fn parse_length(value: &str) -> Result<u64, HeadError> {
    const DIGITS_MAX: usize = 19;
    let bad = || HeadError::Malformed(format!("content-length {value:?} is not a number"));
    if value.is_empty() || value.len() > DIGITS_MAX || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    value.parse().map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<(Head, usize)>, HeadError> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn a_complete_head_is_parsed_with_its_length() {
        let text = "GET /5?x=1 HTTP/1.1\r\nHost: a\r\nX-A:  b \r\n\r\nrest";
        let (head, len) = parse(text).expect("valid").expect("complete");
        assert_eq!(len, text.len() - 4);
        assert_eq!((head.method.as_str(), head.path()), ("GET", "/5"));
        assert_eq!(head.target, "/5?x=1");
        assert_eq!(head.header("x-a"), Some("b"));
        assert_eq!(head.framing, Framing::Length(0));
        assert!(head.keep_alive());
    }

    #[test]
    fn an_incomplete_head_asks_for_more() {
        assert_eq!(parse("GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        assert_eq!(parse(""), Ok(None));
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let both = "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse(both).map(|_| ()).unwrap_err().status(), 400);
        let disagree = "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n";
        assert_eq!(parse(disagree).map(|_| ()).unwrap_err().status(), 400);
        for bad in ["-1", "+3", "1 2", "0x10", "", "12345678901234567890"] {
            let text = format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(parse(&text).map(|_| ()).unwrap_err().status(), 400, "{bad}");
        }
        let gzip = "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(parse(gzip).map(|_| ()).unwrap_err().status(), 501);
    }

    #[test]
    fn a_huge_declared_length_is_only_a_number() {
        let text = "GET /health HTTP/1.1\r\nContent-Length: 4611686018427387904\r\n\r\n";
        let (head, _) = parse(text).expect("valid").expect("complete");
        assert_eq!(head.framing, Framing::Length(4_611_686_018_427_387_904));
    }

    #[test]
    fn too_many_header_lines_is_431() {
        let mut text = "GET / HTTP/1.1\r\n".to_string();
        for i in 0..=HEADERS_MAX {
            text.push_str(&format!("X-{i}: v\r\n"));
        }
        text.push_str("\r\n");
        assert_eq!(parse(&text), Err(HeadError::TooManyHeaders));
    }

    #[test]
    fn http_1_0_closes_unless_asked_to_keep_alive() {
        let (head, _) = parse("GET / HTTP/1.0\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert!(!head.keep_alive());
        let text = "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n";
        let (head, _) = parse(text).expect("valid").expect("complete");
        assert!(head.keep_alive());
        let text = "GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n";
        let (head, _) = parse(text).expect("valid").expect("complete");
        assert!(!head.keep_alive());
    }
}
