//! The HTTP side of a balancer node: routing, and one handler per file.
//!
//! Handlers run on the pool of `crate::http`. They read the event loop's
//! [`Shared`] view: a prime request reads the applied load table and never
//! waits for Raft, a report is handed to the loop through a bounded channel.
//! Only the note waits for Raft (a write until it is applied, a read until its
//! read index is), with a deadline, and not on a handler thread: see `note`.

pub mod metrics;
pub mod note;
pub mod prime;
pub mod report;
pub mod upstream;

use std::sync::Arc;

use crossbeam_channel::Sender;
use tiny_http::{Method, Request};

use crate::http::{self, Answer, Reply};
use crate::runtime::event_loop::LoopInput;
use crate::runtime::shared::Shared;
use prime::Forwarder;

/// What every handler may use.
pub struct NodeHttp {
    pub shared: Arc<Shared>,
    /// To the event loop (reports, note requests).
    pub input: Sender<LoopInput>,
    pub forwarder: Forwarder,
    /// Where note requests wait for Raft, off the handler threads.
    pub note_waiters: note::NoteWaiters,
}

impl NodeHttp {
    /// The handler for `crate::http::serve`: routes, then counts the answer.
    pub fn into_handler(self) -> http::Handler {
        let this = Arc::new(self);
        Arc::new(move |request: &mut Request| {
            let answer = this.route(request);
            // A request given away is counted where it is answered.
            if let Answer::Now(reply) = &answer {
                this.shared.metrics.count_response(reply.status_code().0);
            }
            answer
        })
    }

    fn route(&self, request: &mut Request) -> Answer {
        let url = request.url().to_string();
        let path = url.split('?').next().unwrap_or("");
        let method = request.method().clone();
        let allowed: &[&str] = match path {
            "/" | "/health" | "/status" | "/metrics" => &["GET"],
            "/report" => &["POST"],
            "/note" => &["GET", "PUT", "POST"],
            _ if is_prime_path(path) => &["GET"],
            _ => return http::error(404, &format!("no such path: {}", truncate(path))).into(),
        };
        let head_of_get = method == Method::Head && allowed.contains(&"GET");
        if !allowed.contains(&method.as_str()) && !head_of_get {
            let allowed = allowed.join(", ");
            return http::with_header(
                http::error(405, &format!("{path} takes {allowed}")),
                "Allow",
                &allowed,
            )
            .into();
        }
        let reply = match path {
            "/" => page(),
            "/health" => http::text(200, "ok"),
            // Every node's page shows every node: it fetches their /status.
            "/status" => http::with_header(
                http::json(200, &self.shared.status()),
                "Access-Control-Allow-Origin",
                "*",
            ),
            "/note" => return note::handle(self, request),
            "/metrics" => metrics::reply(&self.shared),
            "/report" => report::handle(self, request),
            _ => {
                let n_text = path.strip_prefix("/prime/").unwrap_or(&path[1..]);
                prime::handle(self, n_text)
            }
        };
        reply.into()
    }
}

/// The NoteRaft page, one self-contained file built into the binary.
fn page() -> Reply {
    http::with_header(
        Reply::from_data(include_str!("page.html").as_bytes().to_vec()),
        "Content-Type",
        "text/html; charset=utf-8",
    )
}

/// `/N` (one path segment that is not a named route) and `/prime/N` are prime
/// requests; whether N is valid is the handler's to say (400), not the router's.
fn is_prime_path(path: &str) -> bool {
    path.starts_with("/prime/") || (path.len() > 1 && !path[1..].contains('/'))
}

/// Input echoed in an error message is cut short, so a huge URL cannot make a
/// huge answer.
pub fn truncate(text: &str) -> String {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prime_paths_are_one_segment_or_under_prime() {
        for p in ["/5", "/abc", "/prime/5", "/prime/", "/prime/a/b", "/1e3"] {
            assert!(is_prime_path(p), "{p}");
        }
        for p in ["/", "/a/b", "/note/x"] {
            assert!(!is_prime_path(p), "{p}");
        }
    }

    #[test]
    fn echoed_input_is_truncated() {
        assert_eq!(truncate("abc"), "abc");
        let long = "x".repeat(1000);
        assert_eq!(truncate(&long).len(), 67);
        let wide = "é".repeat(100);
        assert!(truncate(&wide).ends_with("..."));
    }
}
