//! The values that flow in and out of the Raft core: log entries, the hard state,
//! snapshots, the messages peers exchange, and the `Ready` hand-off.
//!
//! Everything here is plain data. The core never encodes it: the wire module
//! turns messages into datagrams and the storage module writes entries, hard
//! state and snapshots to disk, each in its own format. The messages derive
//! serde's traits so that the wire module can encode them; serde is a data model,
//! not I/O, and the core never calls it.

use serde::{Deserialize, Serialize};

use super::membership::Membership;

/// A node's identity inside the core. The runtime maps its human names
/// (`A`..`E` in nodes.txt) to these numbers.
pub type NodeId = u64;

/// The kind of a log entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    /// Appended by every new leader at the start of its term, so that it can commit
    /// entries of earlier terms (§5.4.2) and serve reads (§8).
    Noop,
    /// A command for the state machine, opaque to the core.
    Command,
    /// A new configuration (`Membership::encode`), in force from the moment it
    /// is appended. New kinds go last: the position is the tag on the wire.
    Config,
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    pub term: u64,
    pub index: u64,
    pub kind: EntryKind,
    pub data: Vec<u8>,
}

impl Entry {
    /// A conservative upper bound of the bytes this entry takes inside an encoded
    /// message; the core cuts batches with it so that a datagram never exceeds the
    /// configured limit whatever the codec's small framing overhead.
    pub(crate) fn size_bound(&self) -> usize {
        ENTRY_OVERHEAD_BYTES + self.data.len()
    }
}

/// Upper bound of what an entry adds to a message besides its data (term, index,
/// kind, length prefix): three varints of at most 10 bytes plus a tag, rounded up.
pub(crate) const ENTRY_OVERHEAD_BYTES: usize = 40;

/// Upper bound of a message's own fields (from, to, term, tags, indexes, commit).
pub const MESSAGE_OVERHEAD_BYTES: usize = 128;

/// Upper bound of what the snapshot's configuration adds to a chunk's message
/// (`Membership::wire_bound` of the largest configuration); the core cuts
/// chunks smaller when the configuration needs the room.
pub const MAX_SNAPSHOT_CONFIG_BYTES: usize =
    super::membership::MAX_ENCODED_BYTES + super::membership::MAX_MEMBERS + 8;

/// The state that must be durable before the node says anything that depends on it
/// (Figure 2: currentTerm, votedFor; commit is kept so a restart can re-apply).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: u64,
    pub vote: Option<NodeId>,
    pub commit: u64,
}

/// Where a snapshot sits in the log: it replaces every entry up to `index`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub index: u64,
    pub term: u64,
}

/// A state-machine snapshot with its position in the log and the
/// configuration in force there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    /// The configuration of the last `Config` entry the snapshot replaces; None
    /// when it replaces none (the bootstrap configuration holds) or was written
    /// by a version that did not record it (data dir format 1, which had none).
    pub membership: Option<Membership>,
    pub data: Vec<u8>,
}

/// The answer of a follower to an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendResult {
    /// The follower's log now matches the leader's up to `match_index`.
    Accepted { match_index: u64 },
    /// The consistency check failed at `rejected_index` (the append's
    /// `prev_log_index`). The hint lets the leader skip a whole term at once:
    /// `hint_term` is the term of the follower's entry at `rejected_index` (0 when
    /// the follower's log is shorter) and `hint_index` the first index the follower
    /// holds with that term (or its last index + 1 when its log is shorter).
    Rejected {
        rejected_index: u64,
        hint_term: u64,
        hint_index: u64,
    },
}

/// What one node says to another. `term` is the sender's current term, except for
/// a pre-vote request, which carries the term the sender would campaign in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub from: NodeId,
    /// The sender's incarnation (`Config::incarnation`): its votes and
    /// acknowledgements count only while it is the one its id is bound to.
    pub incarnation: u64,
    pub to: NodeId,
    pub term: u64,
    pub body: MessageBody,
}

/// Terms and indexes above this are malformed: no real cluster gets near them,
/// and refusing them keeps `term + 1` and `index + 1` from overflowing. A node
/// never sends a term above it either: one holding it does not campaign.
pub const MAX_TERM_OR_INDEX: u64 = u64::MAX / 2;

/// The most a message may raise a node's term by. Terms grow by one per
/// election (PreVote keeps a cut-off node from counting up alone), so a real
/// peer is never this many elections ahead: 2^32 elections, one every 150 ms,
/// take 20 years. A message from further ahead is ignored. Without it, one
/// forged message with a term just under [`MAX_TERM_OR_INDEX`] was obeyed and
/// written to disk, and the next PreVote (term + 1) was refused as malformed by
/// every peer: no leader, for good, across restarts.
///
/// The term space is finite, so a bound cannot make forged terms harmless, only
/// slow: about 2^31 forged messages, each adopted in turn, still climb to the
/// top, where no node can campaign. Authenticating datagrams (the cluster key)
/// is the real defence; this keeps one message from being enough.
pub(crate) const MAX_TERM_STEP: u64 = 1 << 32;

/// The one term rule for messages from peers: whether a node in term `current`
/// listens to a message of term `offered` above its own (and so may adopt it).
/// A term adopted this way is at most `current + MAX_TERM_STEP`, so from any
/// term a real cluster reaches, the node's PreVote and candidacy (`term + 1`)
/// are well formed and within every peer's reach; only a climb of about 2^31
/// such steps reaches [`MAX_TERM_OR_INDEX`], where [`can_increment_term`] stops.
pub(crate) fn term_within_reach(current: u64, offered: u64) -> bool {
    offered <= MAX_TERM_OR_INDEX && offered <= current.saturating_add(MAX_TERM_STEP)
}

/// Whether a node in `term` may start an election: its next term must itself
/// be a well-formed term, or every peer would ignore the campaign.
pub(crate) fn can_increment_term(term: u64) -> bool {
    term < MAX_TERM_OR_INDEX
}

impl Message {
    /// Whether every term and index in the message is at most
    /// [`MAX_TERM_OR_INDEX`]; the core ignores a message that is not.
    pub(crate) fn is_well_formed(&self) -> bool {
        use MessageBody::*;
        let ok = |v: u64| v <= MAX_TERM_OR_INDEX;
        ok(self.term)
            && match &self.body {
                RequestVote {
                    last_log_index,
                    last_log_term,
                    ..
                } => ok(*last_log_index) && ok(*last_log_term),
                AppendEntries {
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                } => {
                    ok(*prev_log_index)
                        && ok(*prev_log_term)
                        && ok(*leader_commit)
                        && entries.iter().all(|e| ok(e.index) && ok(e.term))
                }
                AppendEntriesResponse {
                    result: AppendResult::Accepted { match_index },
                } => ok(*match_index),
                AppendEntriesResponse {
                    result:
                        AppendResult::Rejected {
                            rejected_index,
                            hint_term,
                            hint_index,
                        },
                } => ok(*rejected_index) && ok(*hint_term) && ok(*hint_index),
                Heartbeat { commit, .. } => ok(*commit),
                InstallSnapshot {
                    meta,
                    membership,
                    offset,
                    total_len,
                    ..
                } => {
                    ok(meta.index)
                        && ok(meta.term)
                        && ok(*offset)
                        && ok(*total_len)
                        && membership.as_ref().is_none_or(|m| m.validate().is_ok())
                }
                InstallSnapshotResponse {
                    snapshot_index,
                    next_offset,
                    ..
                } => ok(*snapshot_index) && ok(*next_offset),
                ReadIndexResponse {
                    index: Some(index), ..
                } => ok(*index),
                RequestVoteResponse { .. }
                | HeartbeatResponse { .. }
                | ReadIndex { .. }
                | ReadIndexResponse { index: None, .. }
                | TimeoutNow => true,
            }
    }
}

/// The message kinds of Raft (Figure 2) plus the extensions the core implements:
/// PreVote (§9.6 of the dissertation), ReadIndex (§6.4), leadership transfer (§3.10)
/// and chunked snapshots (§7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    RequestVote {
        pre_vote: bool,
        last_log_index: u64,
        last_log_term: u64,
        /// Set by a candidate campaigning on the leader's TimeoutNow: voters then
        /// grant even while they still hear from the (stepping down) leader.
        transfer: bool,
        /// The incarnation the candidate's configuration binds the recipient
        /// to (`Some(0)`: none), or None while the candidate's log holds no
        /// configuration yet (a new cluster's first moments): a joining node
        /// (`Config::joining`) grants its vote only on None or on its own
        /// incarnation.
        bound: Option<u64>,
    },
    RequestVoteResponse {
        pre_vote: bool,
        granted: bool,
    },
    AppendEntries {
        prev_log_index: u64,
        prev_log_term: u64,
        entries: Vec<Entry>,
        leader_commit: u64,
    },
    AppendEntriesResponse {
        result: AppendResult,
    },
    /// Keeps followers from campaigning, carries the commit index up to what the
    /// follower is known to hold, and confirms leadership for reads (`read_seq`).
    Heartbeat {
        commit: u64,
        read_seq: u64,
    },
    HeartbeatResponse {
        read_seq: u64,
    },
    InstallSnapshot {
        meta: SnapshotMeta,
        /// The snapshot's configuration (see [`Snapshot::membership`]), in the
        /// chunk at offset 0 only (None in the others): a snapshot's index and
        /// term fix its configuration, so the follower keeps the first chunk's.
        membership: Option<Membership>,
        /// Where `chunk` starts within the snapshot's data.
        offset: u64,
        /// The length of the whole snapshot's data.
        total_len: u64,
        chunk: Vec<u8>,
    },
    InstallSnapshotResponse {
        /// The snapshot this answers (its last included index).
        snapshot_index: u64,
        /// How many bytes the follower holds; the leader resumes from there.
        next_offset: u64,
        /// The follower installed the snapshot (or already had everything in it).
        done: bool,
    },
    /// A follower asks the leader for a read index on behalf of its client.
    ReadIndex {
        ctx: u64,
    },
    /// The leader's answer: `index` is the read index, or None when it could not
    /// serve (not leader any more); the follower's caller then retries.
    ReadIndexResponse {
        ctx: u64,
        index: Option<u64>,
    },
    /// Leadership transfer: campaign now, without waiting for a timeout.
    TimeoutNow,
}

/// A linearizable read that may now be served: once the state machine has applied
/// `index`, its state reflects every write that completed before the read began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub ctx: u64,
    pub index: u64,
}

/// A read the core could not serve (no leader, leadership lost); the caller
/// answers its client with an error or retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadFailure {
    pub ctx: u64,
}

/// The role of a node (Figure 4, with PreVote's extra step).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

impl Role {
    /// The name used in `/status` and the logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::PreCandidate | Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }
}

/// Everything the core wants done after a round of input, in the order the caller
/// must do it:
/// 1. persist `snapshot` (if any), then `entries` and `hard_state`, and fsync;
/// 2. send `messages` (they may promise what step 1 made durable);
/// 3. restore the state machine from `snapshot` (if any) and apply
///    `committed_entries` in order;
/// 4. serve `read_states` once applied >= their index, fail `read_failures`;
/// 5. call `Raft::advance`.
#[derive(Debug, Default)]
pub struct Ready {
    pub hard_state: Option<HardState>,
    /// A snapshot received from the leader: it replaces the whole log.
    pub snapshot: Option<Snapshot>,
    /// Entries to append. When the first one's index is at or below the stored last
    /// index, the stored log is cut there first (a conflicting suffix is replaced).
    pub entries: Vec<Entry>,
    pub messages: Vec<Message>,
    pub committed_entries: Vec<Entry>,
    pub read_states: Vec<ReadState>,
    pub read_failures: Vec<ReadFailure>,
}

impl Ready {
    /// True when the caller must write and fsync before sending.
    pub fn must_persist(&self) -> bool {
        self.hard_state.is_some() || self.snapshot.is_some() || !self.entries.is_empty()
    }
}

/// Why a proposal was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// Only the leader appends; `leader` is who this node believes leads, if anyone.
    NotLeader { leader: Option<NodeId> },
    /// The entry could never fit one message (`limit` bytes of data at most).
    TooLarge { limit: usize },
    /// The leader is handing leadership over and accepts nothing meanwhile.
    TransferInProgress,
}

/// Why a configuration change was refused (`Raft::propose_membership`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeRefused {
    /// Only the leader changes the configuration.
    NotLeader { leader: Option<NodeId> },
    /// The previous change has not committed yet (one change at a time).
    Pending { index: u64 },
    /// The leader has not yet committed an entry of its own term, so it does
    /// not know that no other change is pending (dissertation §4.1's fix).
    NotReady,
    /// The leader is handing leadership over.
    TransferInProgress,
    /// The learner to promote has not caught up with the leader's log.
    NotCaughtUp { id: NodeId, matched: u64, last: u64 },
    /// The learner to promote has not answered this leader, or answered as
    /// another incarnation than the one its configuration binds (its data dir
    /// was replaced): a voter must be bound to the data dir that votes.
    NotHeard { id: NodeId },
    /// The change would leave fewer than a majority of the voters bound to an
    /// incarnation (`Membership::bound_margin`) and fewer than before: a
    /// joining node votes only for candidates that bind it, so a cluster whose
    /// bound voters are no majority could not elect anyone (learners are bound
    /// as soon as the leader hears from them).
    Unbound { bound: usize, voters: usize },
    /// The change itself is invalid (unknown member, duplicate, last voter).
    Invalid(super::membership::MembershipError),
}

impl std::fmt::Display for ChangeRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChangeRefused::NotLeader { leader: Some(id) } => {
                write!(f, "not the leader (node {id} is)")
            }
            ChangeRefused::NotLeader { leader: None } => f.write_str("no leader known"),
            ChangeRefused::Pending { index } => write!(
                f,
                "another configuration change (index {index}) has not committed yet"
            ),
            ChangeRefused::NotReady => f.write_str(
                "the leader has not committed an entry of its term (or written the cluster's first \
                 configuration) yet; try again shortly",
            ),
            ChangeRefused::TransferInProgress => f.write_str("leadership transfer in progress"),
            ChangeRefused::NotCaughtUp { id, matched, last } => write!(
                f,
                "node {id} has not caught up (it holds up to index {matched} of {last})"
            ),
            ChangeRefused::NotHeard { id } => write!(
                f,
                "node {id} has not answered this leader as the data dir the configuration knows \
                 (is it running? if its data dir was replaced, remove it and add it back)"
            ),
            ChangeRefused::Unbound { bound, voters } => write!(
                f,
                "it would leave {bound} of {voters} voters bound (heard from by a leader since \
                 their data dir began), not a majority: wait until the others answer, or \
                 remove one that never did first"
            ),
            ChangeRefused::Invalid(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ChangeRefused {}

impl std::fmt::Display for ProposeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProposeError::NotLeader { leader: Some(id) } => {
                write!(f, "not the leader (node {id} is)")
            }
            ProposeError::NotLeader { leader: None } => write!(f, "no leader known"),
            ProposeError::TooLarge { limit } => {
                write!(
                    f,
                    "proposal too large (at most {limit} bytes fit one message)"
                )
            }
            ProposeError::TransferInProgress => write!(f, "leadership transfer in progress"),
        }
    }
}

impl std::error::Error for ProposeError {}
