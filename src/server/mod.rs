//! The HTTP side of a balancer node: routing, and one handler per file.
//!
//! [`NodeHttp`] is the [`Service`] that `crate::http` serves: it names each
//! route's body limit, checks the browser protections (`guard`), routes, and
//! counts what the server reports in the metrics. Handlers run on the request's
//! own connection thread and see the node through its [`NodeHandle`]: a prime
//! request reads the applied load table and never waits for Raft, a report is
//! handed to the loop without waiting. Only the note waits for Raft
//! (a write until it is applied, a read until its read index is), with a
//! deadline and a bounded count of waiting requests: see `note`.

pub mod admin;
pub mod choice;
pub mod counters;
pub mod guard;
pub mod metrics;
pub mod note;
pub mod page;
pub mod prime;
pub mod report;
pub mod upstream;

use std::time::Instant;

use crate::http::{self, Event, Reply, Request, Service};
use crate::report::MAX_REPORT_BYTES;
use crate::runtime::NodeHandle;
use crate::status::{NodeStatus, ServerStatus, Status};
use crate::table::MAX_NOTE_BYTES;
use choice::Chooser;
use counters::HttpCounters;
use guard::Guard;
use prime::Forwarder;

/// Body limit of the membership and server-removal commands (small JSON).
pub(crate) const ADMIN_BODY_BYTES_MAX: usize = 4 * 1024;

/// A route's handler.
type Handler = fn(&NodeHttp, &Request) -> Reply;

/// What every handler may use.
pub struct NodeHttp {
    /// The running node: its view, its table, and the requests it takes.
    pub handle: NodeHandle,
    /// What this side counts for `/metrics`.
    pub counters: HttpCounters,
    pub forwarder: Forwarder,
    /// The policy that picks a server for each prime request.
    pub chooser: Chooser,
    /// Bounds the note requests waiting for Raft at once.
    pub note_admission: note::Admission,
    /// The Host and Origin checks.
    pub guard: Guard,
    /// The signed admin requests already used (each is single-use).
    pub used_admin_requests: admin::UsedLock,
}

/// Breaks the policy's ties differently on every node and every start.
fn choice_seed(me: crate::raft::NodeId) -> u64 {
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    clock ^ (u64::from(std::process::id()) << 32) ^ me
}

impl NodeHttp {
    pub fn new(handle: NodeHandle) -> NodeHttp {
        let guard = Guard::new(handle.nodes(), handle.me());
        let me = handle.me();
        NodeHttp {
            handle,
            counters: HttpCounters::default(),
            forwarder: Forwarder::new(),
            chooser: Chooser::new(choice_seed(me)),
            note_admission: note::Admission::new(note::WAITING_MAX),
            guard,
            used_admin_requests: admin::UsedLock::default(),
        }
    }

    /// Each route in one place: its path, the methods it takes, and its
    /// handler. A path not listed here is a prime request if it has the shape
    /// of one, else 404.
    fn route(&self, request: &Request) -> Reply {
        let path = request.path();
        let (allowed, handler): (&[&str], Handler) = match path {
            "/" => (&["GET"], |node, _| node.page()),
            "/health" => (&["GET"], |_, _| http::text(200, "ok")),
            // Every node's page shows every node: it fetches their /status.
            "/status" => (&["GET"], |node, _| {
                let json = http::json(200, &node.status());
                http::with_header(json, "Access-Control-Allow-Origin", "*")
            }),
            "/metrics" => (&["GET"], |node, _| {
                metrics::reply(&node.handle, &node.counters, &node.chooser)
            }),
            "/note" => (&["GET", "PUT", "POST"], NodeHttp::note),
            "/report" => (&["POST"], report::handle),
            "/admin/forget" => (&["POST"], admin::forget),
            "/admin/member" => (&["POST"], admin::member),
            _ if is_prime_path(path) => (&["GET"], |node, request| {
                let path = request.path();
                let n_text = path.strip_prefix("/prime/").unwrap_or(&path[1..]);
                prime::handle(node, n_text)
            }),
            _ => return http::error(404, &format!("no such path: {}", truncate(path))),
        };
        let method = request.method();
        let head_of_get = method == "HEAD" && allowed.contains(&"GET");
        if !allowed.contains(&method) && !head_of_get {
            let allowed = allowed.join(", ");
            return http::with_header(
                http::error(405, &format!("{path} takes {allowed}")),
                "Allow",
                &allowed,
            );
        }
        handler(self, request)
    }

    /// `/note`: a write only from the node's own origin (the browser guard),
    /// and the answer readable by the other nodes' pages.
    fn note(&self, request: &Request) -> Reply {
        let reply = if matches!(request.method(), "PUT" | "POST") {
            match self.guard.check_write_origin(request) {
                Ok(()) => note::handle(self, request),
                Err(refused) => refused,
            }
        } else {
            note::handle(self, request)
        };
        self.readable_by_node_pages(request, reply)
    }
}

impl NodeHttp {
    /// The JSON of `GET /status`: this node's view of Raft, the membership,
    /// and the agreed table.
    pub fn status(&self) -> Status {
        let node = &self.handle;
        let view = node.view();
        let now = Instant::now();
        let table = node.table();
        Status {
            id: node.name_of(node.me()).unwrap_or_default(),
            role: view.role.as_str().to_string(),
            term: view.term,
            leader: view.leader.and_then(|l| node.name_of(l)),
            commit_index: view.commit_index,
            applied_index: view.applied_index,
            insecure: node.auth().is_insecure(),
            nodes: view
                .members
                .iter()
                .map(|m| NodeStatus {
                    id: m.name.clone(),
                    addr: m.addr.clone(),
                    reachable: m.reachable,
                    voter: m.voter,
                })
                .collect(),
            servers: table
                .servers()
                .map(|(id, s)| ServerStatus {
                    id: id.clone(),
                    url: s.url.clone(),
                    cpu: s.cpu,
                    wait: s.wait,
                    alive: s.alive,
                    age_ms: table.age_ms(id, now),
                })
                .collect(),
        }
    }

    /// The NoteRaft page, one self-contained file built into the binary.
    fn page(&self) -> Reply {
        let status = self.status();
        let note = self.handle.table().note().to_string();
        http::with_header(
            Reply::new(200, page::render(&status, &note).into_bytes()),
            "Content-Type",
            "text/html; charset=utf-8",
        )
    }

    /// Lets another node's page read this answer (CORS), when that page is
    /// failing over to this node: only for the nodes' own origins, so that no
    /// other site can read the note through a visitor's browser. The page
    /// writes with the form `POST`, a request that needs no preflight.
    fn readable_by_node_pages(&self, request: &Request, reply: Reply) -> Reply {
        match request.header("origin") {
            Some(origin) if self.guard.is_node_origin(origin) => {
                let reply = http::with_header(reply, "Access-Control-Allow-Origin", origin);
                let reply =
                    http::with_header(reply, "Access-Control-Expose-Headers", note::INDEX_HEADER);
                http::with_header(reply, "Vary", "Origin")
            }
            _ => reply,
        }
    }
}

impl Service for NodeHttp {
    fn body_limit(&self, method: &str, path: &str) -> usize {
        match (method, path) {
            ("POST", "/report") => MAX_REPORT_BYTES,
            ("PUT", "/note") => MAX_NOTE_BYTES,
            ("POST", "/note") => note::MAX_FORM_BYTES,
            ("POST", "/admin/member" | "/admin/forget") => ADMIN_BODY_BYTES_MAX,
            _ => 0,
        }
    }

    fn handle(&self, request: &Request) -> Reply {
        match self.guard.check_host(request) {
            Ok(()) => self.route(request),
            Err(refused) => refused,
        }
    }

    fn observe(&self, event: Event) {
        self.counters.count_http(event);
    }
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
