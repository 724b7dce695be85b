//! The load report a daemon sends to `POST /report`, and its validation.
//!
//! JSON `{"server":"ID","url":"http://…","cpu":12.5,"wait":3.0,"seq":42}`.
//! The body comes from the network, so every field is checked before the
//! report can become a Raft proposal: a bad one is answered 400 with the reason.

use serde::{Deserialize, Serialize};

/// Largest report body accepted (SPEC: 413 above it).
pub(crate) const MAX_REPORT_BYTES: usize = 4096;
/// Longest server id: it appears in headers, JSON and log lines.
pub(crate) const MAX_SERVER_ID_BYTES: usize = 128;
/// Longest worker URL.
pub(crate) const MAX_URL_BYTES: usize = 512;

/// One CPU load sample of one server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The server's id (the daemon's `--id`).
    pub server: String,
    /// Where its worker answers, `http://host:port`.
    pub url: String,
    /// CPU used, percent of all CPUs, 0..=100.
    pub cpu: f64,
    /// Share of time runnable work waited for a CPU it did not get, 0..=100.
    #[serde(default)]
    pub wait: f64,
    /// Grows by one per report and across daemon restarts; older ones are dropped.
    pub seq: u64,
}

/// Why a report was refused; `Display` is the 400's one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportError {
    /// The body is not the report's JSON (serde's reason).
    Json(String),
    /// `server` is empty or longer than `MAX_SERVER_ID_BYTES`.
    ServerLength,
    /// `server` holds a control character.
    ServerControl,
    /// `url` is longer than `MAX_URL_BYTES`.
    UrlLength,
    /// `url` is not `http://HOST:PORT`, for this reason.
    Url(&'static str),
    /// This field (`cpu`, `wait`) is outside 0..=100.
    OutOfRange(&'static str),
}

impl std::fmt::Display for ReportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReportError::Json(e) => write!(f, "bad report JSON: {e}"),
            ReportError::ServerLength => {
                write!(
                    f,
                    "bad report: server must be 1-{MAX_SERVER_ID_BYTES} bytes"
                )
            }
            ReportError::ServerControl => {
                f.write_str("bad report: server must not contain control characters")
            }
            ReportError::UrlLength => {
                write!(f, "bad report: url must be at most {MAX_URL_BYTES} bytes")
            }
            ReportError::Url(reason) => {
                write!(f, "bad report: url must be http://HOST:PORT ({reason})")
            }
            ReportError::OutOfRange(name) => {
                write!(f, "bad report: {name} must be between 0 and 100")
            }
        }
    }
}

impl std::error::Error for ReportError {}

impl Report {
    /// Parses and validates a report body.
    pub fn parse(body: &[u8]) -> Result<Report, ReportError> {
        let report: Report =
            serde_json::from_slice(body).map_err(|e| ReportError::Json(e.to_string()))?;
        report.validate()?;
        Ok(report)
    }

    /// Checks the fields' ranges and shapes.
    pub(crate) fn validate(&self) -> Result<(), ReportError> {
        if self.server.is_empty() || self.server.len() > MAX_SERVER_ID_BYTES {
            return Err(ReportError::ServerLength);
        }
        if self.server.chars().any(char::is_control) {
            return Err(ReportError::ServerControl);
        }
        if self.url.len() > MAX_URL_BYTES {
            return Err(ReportError::UrlLength);
        }
        check_worker_url(&self.url).map_err(ReportError::Url)?;
        for (name, value) in [("cpu", self.cpu), ("wait", self.wait)] {
            if !(0.0..=100.0).contains(&value) {
                return Err(ReportError::OutOfRange(name));
            }
        }
        Ok(())
    }
}

/// Longest host name (DNS: 253 characters, labels of at most 63).
const MAX_HOST_BYTES: usize = 253;
const MAX_LABEL_BYTES: usize = 63;

/// Checks that a worker URL is `http://HOST:PORT` and nothing else: the node
/// builds request lines and `Host` headers from it, and a daemon must not be able
/// to point it at a path, a query, credentials or another scheme. HOST is a name
/// (letters, digits, `-`, dots between labels), an IPv4 literal, or an IPv6
/// literal in brackets; PORT is 1-65535. A lone trailing `/` is allowed: it
/// names the same root, and `--worker http://h:1/` is an easy thing to type.
/// The error is the reason, for the 400's one line.
pub fn check_worker_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("the scheme must be http://")?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#']) {
        return Err("no path, query or fragment is allowed");
    }
    if authority.contains('@') {
        return Err("no user info is allowed");
    }
    let (host, port) = authority.rsplit_once(':').ok_or("a port is required")?;
    check_port(port)?;
    check_host(host)
}

fn check_port(port: &str) -> Result<(), &'static str> {
    let valid = !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
    valid.then_some(()).ok_or("the port must be 1-65535")
}

fn check_host(host: &str) -> Result<(), &'static str> {
    if let Some(inner) = host.strip_prefix('[') {
        let literal = inner
            .strip_suffix(']')
            .ok_or("an IPv6 host needs [ and ]")?;
        return literal
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| "not an IPv6 address");
    }
    if host.is_empty() || host.len() > MAX_HOST_BYTES {
        return Err("the host must be 1-253 characters");
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return host
            .parse::<std::net::Ipv4Addr>()
            .map(|_| ())
            .map_err(|_| "not an IPv4 address");
    }
    let label_ok = |label: &str| {
        (1..=MAX_LABEL_BYTES).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    host.split('.')
        .all(label_ok)
        .then_some(())
        .ok_or("the host must be a name (letters, digits, -) or an IP address")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_report_parses_with_wait_defaulting_to_zero() {
        let r =
            Report::parse(br#"{"server":"w1","url":"http://127.0.0.1:13337","cpu":12.5,"seq":42}"#)
                .expect("valid report");
        assert_eq!(r.server, "w1");
        assert_eq!(r.wait, 0.0);
        assert_eq!(r.seq, 42);
        let back =
            Report::parse(&serde_json::to_vec(&r).expect("serializable")).expect("round trip");
        assert_eq!(back, r);
    }

    #[test]
    fn bad_reports_are_refused_with_a_reason() {
        let cases: [&[u8]; 11] = [
            b"",
            b"not json",
            br#"{"server":"w","url":"http://h:1","cpu":12.5}"#,
            br#"{"server":"","url":"http://h:1","cpu":1,"seq":1}"#,
            br#"{"server":"w","url":"ftp://h:1","cpu":1,"seq":1}"#,
            br#"{"server":"w","url":"http://h:1/x y","cpu":1,"seq":1}"#,
            br#"{"server":"w","url":"http://h:1","cpu":101,"seq":1}"#,
            br#"{"server":"w","url":"http://h:1","cpu":-1,"seq":1}"#,
            br#"{"server":"w","url":"http://h:1","cpu":1,"wait":200,"seq":1}"#,
            br#"{"server":"w","url":"http://h:1","cpu":1,"seq":-1}"#,
            br#"{"server":"w","url":"http://h:1","cpu":"1","seq":1}"#,
        ];
        for body in cases {
            let err = Report::parse(body)
                .expect_err(&String::from_utf8_lossy(body))
                .to_string();
            assert!(err.starts_with("bad report"), "{err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn worker_urls_are_http_host_port_and_nothing_else() {
        let good = [
            "http://127.0.0.1:13337",
            "http://127.0.0.1:13337/",
            "http://localhost:1",
            "http://worker-3.example.com:65535",
            "http://[::1]:8080",
            "http://[fe80::1:2]:80/",
        ];
        for url in good {
            assert_eq!(check_worker_url(url), Ok(()), "{url}");
        }
        let bad = [
            "https://h:1",
            "HTTP://h:1",
            "ftp://h:1",
            "h:1",
            "http://",
            "http://h",
            "http://h:",
            "http://h:0",
            "http://h:65536",
            "http://h:123456",
            "http://h:+80",
            "http://h:1//",
            "http://h:1/x",
            "http://h:1?x=1",
            "http://h:1#f",
            "http://user:pw@h:1",
            "http://@h:1",
            "http://:1",
            "http://h h:1",
            "http://h_h:1",
            "http://-h:1",
            "http://h-:1",
            "http://a..b:1",
            "http://.h:1",
            "http://999.1.1.1:1",
            "http://[::1:1",
            "http://[nope]:1",
            "http://::1:80",
            "http://h\r\n:1",
        ];
        for url in bad {
            assert!(check_worker_url(url).is_err(), "{url}");
        }
        let long_label = format!("http://{}:1", "a".repeat(64));
        assert!(check_worker_url(&long_label).is_err());
        let long_host = format!("http://{}a:1", "a.".repeat(127));
        assert!(check_worker_url(&long_host).is_err());
        let longest_host = format!("http://{}a:1", "a.".repeat(126));
        assert_eq!(check_worker_url(&longest_host), Ok(()));
    }

    #[test]
    fn a_bad_url_is_refused_with_its_reason_on_one_line() {
        let body = br#"{"server":"w","url":"http://h:1/prime?n=1","cpu":1,"seq":1}"#;
        let err = Report::parse(body).expect_err("a path is refused");
        assert!(matches!(err, ReportError::Url(_)), "{err:?}");
        let err = err.to_string();
        assert!(err.contains("no path"), "{err}");
        assert!(!err.contains('\n'));
    }
}
