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
    /// The configuration in force (nodes.txt's order, then the others by
    /// name), with what this node knows of
    /// each member's reachability.
    pub members: Vec<MemberView>,
}

/// One member of the configuration in force, as `/status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    pub id: NodeId,
    pub name: String,
    pub addr: String,
    /// False for a learner.
    pub voter: bool,
    /// Whether this node heard from it recently; None where this node has no
    /// reason to hear from it (a follower does not hear from other followers).
    pub reachable: Option<bool>,
}

/// State shared by the event loop (writer) and the HTTP threads (readers).
pub struct Shared {
    /// This node's Raft id and nodes.txt (the bootstrap membership).
    pub me: NodeId,
    pub nodes: Nodes,
    /// Where the members in force and nodes.txt's nodes are: the only sources
    /// datagrams are accepted from, and where they are sent. The event loop
    /// rewrites it when the configuration changes.
    pub book: RwLock<Nodes>,
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
        let members = nodes
            .with_ids()
            .map(|(id, e)| MemberView {
                id,
                name: e.id.clone(),
                addr: e.addr.clone(),
                voter: true,
                reachable: None,
            })
            .collect();
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
                members,
            }),
            book: RwLock::new(nodes.clone()),
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

    /// The name of a Raft id (a member in force, or a node of nodes.txt).
    pub(crate) fn name_of(&self, id: NodeId) -> Option<String> {
        crate::locks::read(&self.book).get(id).map(|e| e.id.clone())
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
