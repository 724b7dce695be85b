//! The load report a daemon sends to `POST /report`, and its validation.
//!
//! JSON `{"server":"ID","url":"http://…","cpu":12.5,"wait":3.0,"seq":42}`.
//! The body comes from the network, so every field is checked before the
//! report can become a Raft proposal: a bad one is answered 400 with the reason.

use serde::{Deserialize, Serialize};

/// Largest report body accepted (SPEC: 413 above it).
pub const MAX_REPORT_BYTES: usize = 4096;
/// Longest server id: it appears in headers, JSON and log lines.
pub const MAX_SERVER_ID_BYTES: usize = 128;
/// Longest worker URL.
pub const MAX_URL_BYTES: usize = 512;

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

impl Report {
    /// Parses and validates a report body; the error is a one-line reason.
    pub fn parse(body: &[u8]) -> Result<Report, String> {
        let report: Report =
            serde_json::from_slice(body).map_err(|e| format!("bad report JSON: {e}"))?;
        report.validate()?;
        Ok(report)
    }

    /// Checks the fields' ranges and shapes.
    pub fn validate(&self) -> Result<(), String> {
        if self.server.is_empty() || self.server.len() > MAX_SERVER_ID_BYTES {
            return Err(format!(
                "bad report: server must be 1-{MAX_SERVER_ID_BYTES} bytes"
            ));
        }
        if self.server.chars().any(char::is_control) {
            return Err("bad report: server must not contain control characters".into());
        }
        if self.url.len() > MAX_URL_BYTES || !valid_worker_url(&self.url) {
            return Err(format!(
                "bad report: url must be http://HOST:PORT (at most {MAX_URL_BYTES} bytes)"
            ));
        }
        for (name, value) in [("cpu", self.cpu), ("wait", self.wait)] {
            if !(0.0..=100.0).contains(&value) {
                return Err(format!("bad report: {name} must be between 0 and 100"));
            }
        }
        Ok(())
    }
}

/// `http://` followed by a host and an optional port, with no spaces or control
/// characters: the node builds request URLs from it.
fn valid_worker_url(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.trim_end_matches('/');
    !authority.is_empty()
        && !authority.contains('/')
        && authority
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:[]".contains(c))
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
            let err = Report::parse(body).expect_err(&String::from_utf8_lossy(body));
            assert!(err.starts_with("bad report"), "{err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }
}
