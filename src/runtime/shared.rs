//! What the event loop shares with the HTTP threads: a read-only view of Raft,
//! the applied load table, this node's in-flight work per server, and counters.
//!
//! The event loop is the only writer of the view and the table; HTTP threads
//! only read them, under short read locks, so a prime request never waits for
//! Raft and never blocks the loop for longer than a table lookup.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use super::udp::Outbound;
use crate::auth::Auth;
use crate::http;
use crate::nodes::Nodes;
use crate::raft::{NodeId, Role};
use crate::status::{NodeStatus, ServerStatus, Status};
use crate::table::LoadTable;

/// Raft as the event loop last saw it.
#[derive(Clone, Debug)]
pub struct RaftView {
    pub role: Role,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub commit_index: u64,
    pub applied_index: u64,
    /// Per node (index = Raft id - 1): whether this node heard from it recently;
    /// None where this node has no reason to hear from it (a follower does not
    /// hear from other followers).
    pub reachable: Vec<Option<bool>>,
}

/// State shared by the event loop (writer) and the HTTP threads (readers).
pub struct Shared {
    /// This node's Raft id and the membership.
    pub me: NodeId,
    pub nodes: Nodes,
    pub view: RwLock<RaftView>,
    pub table: RwLock<LoadTable>,
    pub metrics: Metrics,
    /// Largest N served (`--max-n`).
    pub max_n: u64,
    /// The cluster key (or `--insecure`): datagrams and reports are checked with it.
    pub auth: Auth,
    /// This boot's epoch and the counter of the datagrams it sent.
    pub outbound: Outbound,
}

/// What `Shared::new` needs besides the table.
pub struct SharedSettings {
    pub me: NodeId,
    pub nodes: Nodes,
    pub max_n: u64,
    pub auth: Auth,
    /// This boot's epoch, already recorded in the data dir.
    pub epoch: u64,
}

impl Shared {
    pub fn new(settings: SharedSettings, table: LoadTable) -> Shared {
        let SharedSettings {
            me,
            nodes,
            max_n,
            auth,
            epoch,
        } = settings;
        let reachable = vec![None; nodes.entries().len()];
        Shared {
            me,
            auth,
            outbound: Outbound::new(epoch),
            view: RwLock::new(RaftView {
                role: Role::Follower,
                term: 0,
                leader: None,
                commit_index: 0,
                applied_index: 0,
                reachable,
            }),
            nodes,
            table: RwLock::new(table),
            metrics: Metrics::default(),
            max_n,
        }
    }

    pub fn view(&self) -> RaftView {
        self.view.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn table(&self) -> RwLockReadGuard<'_, LoadTable> {
        // A panicking writer cannot leave the table half-applied (apply has no
        // panicking paths on valid data), so a poisoned lock is still readable.
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The nodes.txt name of a Raft id.
    pub fn name_of(&self, id: NodeId) -> Option<String> {
        self.nodes.get(id).map(|e| e.id.clone())
    }

    /// The JSON of `GET /status`.
    pub fn status(&self) -> Status {
        let view = self.view();
        let now = Instant::now();
        let table = self.table();
        Status {
            id: self.name_of(self.me).unwrap_or_default(),
            role: view.role.as_str().to_string(),
            term: view.term,
            leader: view.leader.and_then(|l| self.name_of(l)),
            commit_index: view.commit_index,
            applied_index: view.applied_index,
            insecure: self.auth.is_insecure(),
            nodes: self
                .nodes
                .entries()
                .iter()
                .zip(&view.reachable)
                .map(|(e, reachable)| NodeStatus {
                    id: e.id.clone(),
                    addr: e.addr.clone(),
                    reachable: *reachable,
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
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct Metrics {
    pub datagrams_dropped_decode: AtomicU64,
    pub datagrams_dropped_unknown_source: AtomicU64,
    pub datagrams_dropped_queue_full: AtomicU64,
    /// Refused by the frame: a tag that does not verify, or too short for one.
    pub datagrams_dropped_auth: AtomicU64,
    /// Authentic but already seen, below the replay window, or of an older epoch.
    pub datagrams_dropped_replay: AtomicU64,
    pub datagrams_received: AtomicU64,
    pub datagrams_sent: AtomicU64,
    pub elections: AtomicU64,
    pub reports_received: AtomicU64,
    pub entries_applied: AtomicU64,
    pub snapshots_taken: AtomicU64,
    /// Snapshots received from a leader that the load table could not restore
    /// (`Raft::snapshots_refused`): never installed, never written.
    pub snapshots_refused: AtomicU64,
    /// Note writes answered 200 (committed and applied here).
    pub note_writes: AtomicU64,
    /// Linearizable note reads answered 200.
    pub note_reads: AtomicU64,
    /// Note requests answered 503 (no leader or no quorum in time).
    pub note_unavailable: AtomicU64,
    /// HTTP answers by status code.
    pub responses: Mutex<BTreeMap<u16, u64>>,
    /// Prime requests forwarded, by server: counts and latency histogram.
    pub forwards: Mutex<BTreeMap<String, Forwards>>,
    /// Connections refused beyond the total cap, and beyond the per-source cap.
    pub http_refused_total_cap: AtomicU64,
    pub http_refused_per_source_cap: AtomicU64,
    /// Requests whose head (431) or body (413) was over its limit.
    pub http_heads_too_large: AtomicU64,
    pub http_bodies_too_large: AtomicU64,
    /// Connections cut by a timeout while reading a head, a body, or writing.
    pub http_timeouts_head: AtomicU64,
    pub http_timeouts_body: AtomicU64,
    pub http_timeouts_write: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_response(&self, code: u16) {
        *self
            .responses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(code)
            .or_insert(0) += 1;
    }

    /// Counts what the HTTP server reports: every answer by code, and what it
    /// refused or cut on its own.
    pub fn count_http(&self, event: http::Event) {
        let counter = match event {
            http::Event::Answered(code) => return self.count_response(code),
            http::Event::Refused(http::Cap::Total) => &self.http_refused_total_cap,
            http::Event::Refused(http::Cap::PerSource) => &self.http_refused_per_source_cap,
            http::Event::HeadTooLarge => &self.http_heads_too_large,
            http::Event::BodyTooLarge => &self.http_bodies_too_large,
            http::Event::TimedOut(http::Phase::Head) => &self.http_timeouts_head,
            http::Event::TimedOut(http::Phase::Body) => &self.http_timeouts_body,
            http::Event::TimedOut(http::Phase::Write) => &self.http_timeouts_write,
        };
        Metrics::add(counter);
    }

    /// One forward to `server`: whether it answered, and how long it took
    /// (connect to last byte, failures included).
    pub fn count_forward(&self, server: &str, ok: bool, took: Duration) {
        let mut map = self.forwards.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: only servers from the table (at most MAX_SERVERS) are forwarded to.
        let entry = map.entry(server.to_string()).or_default();
        if ok {
            entry.ok += 1;
        } else {
            entry.failed += 1;
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        entry.micros_sum = entry.micros_sum.saturating_add(micros);
        let bucket = FORWARD_BUCKETS_SECONDS
            .iter()
            .position(|le| took.as_secs_f64() <= *le)
            .unwrap_or(FORWARD_BUCKETS_SECONDS.len());
        entry.buckets[bucket] += 1;
    }
}

/// The upper bounds of `raftlb_forward_seconds`' buckets: from a small prime
/// (about a millisecond) to the largest N's budget.
pub const FORWARD_BUCKETS_SECONDS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// What one server's forwards came to.
#[derive(Clone, Default, Debug)]
pub struct Forwards {
    pub ok: u64,
    pub failed: u64,
    /// Per bucket of [`FORWARD_BUCKETS_SECONDS`] (not cumulative), the last
    /// one over the largest bound.
    pub buckets: [u64; FORWARD_BUCKETS_SECONDS.len() + 1],
    pub micros_sum: u64,
}
