//! What the event loop shares with the HTTP threads (through
//! [`NodeHandle`](super::NodeHandle)): a read-only view of Raft, the applied
//! load table, and the loop's and the UDP thread's counters.
//!
//! The event loop is the only writer of the view and the table; HTTP threads
//! only read them, under short read locks, so a prime request never waits for
//! Raft and never blocks the loop for longer than a table lookup.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

use super::udp::Outbound;
use crate::auth::Auth;
use crate::nodes::Nodes;
use crate::raft::{NodeId, Role};
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
    /// Per node (index = Raft id - 1): whether it votes in the configuration
    /// in force (false: a learner, or no longer a member).
    pub voters: Vec<bool>,
}

/// State shared by the event loop (writer) and the HTTP threads (readers).
pub struct Shared {
    /// This node's Raft id and the membership.
    pub me: NodeId,
    pub nodes: Nodes,
    pub view: RwLock<RaftView>,
    pub table: RwLock<LoadTable>,
    pub counters: LoopCounters,
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
                voters: vec![true; reachable.len()],
                reachable,
            }),
            nodes,
            table: RwLock::new(table),
            counters: LoopCounters::default(),
            max_n,
        }
    }

    pub fn view(&self) -> RaftView {
        crate::locks::read(&self.view).clone()
    }

    pub fn table(&self) -> RwLockReadGuard<'_, LoadTable> {
        crate::locks::read(&self.table)
    }

    /// The nodes.txt name of a Raft id.
    pub(crate) fn name_of(&self, id: NodeId) -> Option<String> {
        self.nodes.get(id).map(|e| e.id.clone())
    }
}

/// What the UDP thread and the event loop count, for `/metrics` (the HTTP
/// side counts its own: `server::counters`).
#[derive(Default)]
pub struct LoopCounters {
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
}

impl LoopCounters {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
