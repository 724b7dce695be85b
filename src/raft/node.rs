//! The Raft state machine of one node: its fields, the role transitions
//! (`become_follower/pre_candidate/candidate/leader`), the clock (`tick`), the
//! entry point for messages (`step`) and the `ready`/`advance` hand-off.
//!
//! The protocol's halves live beside this file: `election.rs` (votes, PreVote,
//! CheckQuorum, leadership transfer), `replication.rs` (appends, heartbeats,
//! commit), `snapshot.rs` (chunked install), `read.rs` (ReadIndex).

use std::collections::BTreeMap;

use super::config::{Config, ConfigError};
use super::log::RaftLog;
use super::membership::{Membership, MembershipChange};
use super::progress::Progress;
use super::read::ReadQueue;
use super::rng::Rng;
use super::snapshot::IncomingSnapshot;
use super::types::*;

/// What storage kept across a restart; `Raft::new` resumes from it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoredState {
    /// The last hard state written; its commit is at least the snapshot's index,
    /// since a snapshot only ever holds committed entries.
    pub hard_state: HardState,
    /// The latest snapshot; the caller restores its state machine from it too.
    pub snapshot: Option<Snapshot>,
    /// The log after the snapshot: the first entry's index is the snapshot's index
    /// + 1 (1 without a snapshot), and indexes are consecutive.
    pub entries: Vec<Entry>,
}

/// Why [`Raft::new`] refused to start; `Display` is the one-line reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreError {
    /// The settings cannot work.
    Config(ConfigError),
    /// The restored log does not start right after the snapshot.
    EntriesDoNotFollowSnapshot,
    /// A configuration entry of the restored log does not decode.
    BadConfigEntry { index: u64, reason: String },
}

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreError::Config(e) => write!(f, "bad settings: {e}"),
            RestoreError::EntriesDoNotFollowSnapshot => {
                f.write_str("restored entries do not follow the snapshot")
            }
            RestoreError::BadConfigEntry { index, reason } => {
                write!(f, "the configuration entry at index {index}: {reason}")
            }
        }
    }
}

impl std::error::Error for RestoreError {}

/// One Raft node. See the module docs of `raft` for how to drive it.
#[derive(Debug)]
pub struct Raft {
    pub(super) config: Config,
    pub(super) term: u64,
    pub(super) vote: Option<NodeId>,
    pub(super) role: Role,
    pub(super) leader: Option<NodeId>,
    pub(super) log: RaftLog,
    /// The configuration in force: the latest in the log (committed or not),
    /// else the snapshot's, else the bootstrap one (§4.1).
    pub(super) membership: Membership,
    /// The index of the `Config` entry `membership` comes from (0: the
    /// snapshot's or the bootstrap configuration).
    pub(super) membership_index: u64,
    /// Followers' progress (leader only; empty otherwise). The leader's own entry
    /// tracks what it persisted.
    pub(super) progress: BTreeMap<NodeId, Progress>,
    /// Votes received in the current (pre-)election: voter -> granted.
    pub(super) votes: BTreeMap<NodeId, bool>,
    /// The incarnations of the nodes that granted this candidacy's vote.
    pub(super) voter_incarnations: BTreeMap<NodeId, u64>,
    /// Ticks since the last heartbeat sent (leader).
    pub(super) heartbeat_elapsed: u64,
    /// Ticks since we last heard from a leader or granted a vote (follower), since
    /// the election started (candidate), or since the last CheckQuorum (leader).
    pub(super) election_elapsed: u64,
    /// This term's election timeout, drawn at random when the timer resets.
    pub(super) randomized_election_ticks: u64,
    /// A leadership transfer in progress: the node that should take over.
    pub(super) transferee: Option<NodeId>,
    /// Ticks since the transfer began; it is abandoned after an election timeout.
    pub(super) transfer_elapsed: u64,
    pub(super) reads: ReadQueue,
    pub(super) incoming_snapshot: Option<IncomingSnapshot>,
    /// Received snapshots the state machine's check refused (`Config::snapshot_check`).
    pub(super) snapshots_refused: u64,
    pub(super) rng: Rng,
    /// Proposals were appended since the last `ready`: send them to followers then.
    pub(super) append_pending: bool,
    /// The incarnation of the message being stepped (its sender's); the
    /// handlers of answers count them by it.
    pub(super) stepping_incarnation: u64,
    /// Output collected for the next `Ready`.
    pub(super) messages: Vec<Message>,
    pub(super) read_states: Vec<ReadState>,
    pub(super) read_failures: Vec<ReadFailure>,
    /// The hard state last handed out in a `Ready`.
    last_hard_state: HardState,
}

impl Raft {
    /// A node resuming from `restored`, with election timeouts drawn from `seed`.
    pub fn new(config: Config, restored: RestoredState, seed: u64) -> Result<Raft, RestoreError> {
        config.validate().map_err(RestoreError::Config)?;
        let snapshot = restored.snapshot.unwrap_or_default();
        if restored
            .entries
            .first()
            .is_some_and(|e| e.index != snapshot.meta.index + 1)
        {
            return Err(RestoreError::EntriesDoNotFollowSnapshot);
        }
        let hs = restored.hard_state;
        for e in restored
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Config)
        {
            if let Err(e2) = Membership::decode(&e.data) {
                return Err(RestoreError::BadConfigEntry {
                    index: e.index,
                    reason: e2.to_string(),
                });
            }
        }
        let log = RaftLog::restore_from(snapshot, restored.entries, hs.commit);
        let mut raft = Raft {
            membership: config.bootstrap.clone(),
            membership_index: 0,
            term: hs.term,
            vote: hs.vote,
            role: Role::Follower,
            leader: None,
            log,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            voter_incarnations: BTreeMap::new(),
            heartbeat_elapsed: 0,
            election_elapsed: 0,
            randomized_election_ticks: 0,
            transferee: None,
            transfer_elapsed: 0,
            reads: ReadQueue::default(),
            incoming_snapshot: None,
            snapshots_refused: 0,
            append_pending: false,
            stepping_incarnation: 0,
            // Hashed, not `seed ^ id x step`: with SplitMix's step that made, for
            // the simulators' small seeds, one node's election timeouts another's
            // shifted by a few draws.
            rng: Rng::derived(seed, config.id),
            messages: Vec::new(),
            read_states: Vec::new(),
            read_failures: Vec::new(),
            last_hard_state: hs,
            config,
        };
        raft.last_hard_state.commit = raft.log.committed();
        raft.refresh_membership();
        raft.reset_election_timer();
        Ok(raft)
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The configuration in force (the latest in the log, committed or not).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The index of the entry that set [`Raft::membership`] (0: the snapshot's
    /// or the bootstrap configuration); it is committed once the commit index
    /// reaches it.
    pub fn membership_index(&self) -> u64 {
        self.membership_index
    }

    /// Whether this node votes in the configuration in force: it is a voter
    /// there, as this incarnation (a node that lost its data dir is another
    /// incarnation, and does not vote until it is removed and added back).
    pub fn is_voter(&self) -> bool {
        self.membership
            .counts(self.config.id, self.config.incarnation)
    }

    /// Whether this node may campaign: it is a voter of the configuration in
    /// force. A node that lost its data dir (another incarnation) may too: it
    /// never counts its own vote or its own log toward a majority, so it can
    /// only win, and commit, with a majority of the others behind it; without
    /// it, a cluster whose newest entry only that node held had no leader.
    ///
    /// So may a voter of the previous configuration whose removal is in force
    /// but not known to be committed (a leader that removed itself and lost
    /// its lead before the removal committed): it may hold the newest
    /// entries, and the voters that lack them may not elect anyone else
    /// (hunt seeds 30142, 31200: with a voter that no leader ever heard from,
    /// joining and so refusing its vote, nobody could be elected). It never
    /// counts itself, so it wins only with a majority of the configuration
    /// that removes it, commits the removal and steps down.
    pub fn may_campaign(&self) -> bool {
        let me = self.config.id;
        self.membership.is_voter(me)
            || (self.membership_index > self.log.committed()
                && self.previous_membership().is_voter(me))
    }

    /// The configuration before the one in force: the previous `Config` entry
    /// in the log, else the snapshot's, else the bootstrap one.
    fn previous_membership(&self) -> Membership {
        self.config_at_or_before(self.membership_index.saturating_sub(1))
            .0
    }

    /// Whether this node's log (or snapshot) holds a configuration: false
    /// until the first leader's bootstrap configuration reaches it.
    pub fn configured(&self) -> bool {
        self.membership_index > 0 || self.log.snapshot().membership.is_some()
    }

    /// Whether this node's data dir started empty (`Config::joining`) and its
    /// configuration does not bind it to its own incarnation yet: it grants
    /// votes only as `Config::joining` says.
    pub fn is_joining(&self) -> bool {
        self.config.joining
            && self
                .membership
                .get(self.config.id)
                .is_none_or(|m| m.incarnation != self.config.incarnation)
    }

    /// Whether the configuration binds this node's id to another incarnation
    /// (this node's data dir is not the one the cluster knows).
    pub fn is_stale_incarnation(&self) -> bool {
        self.membership
            .get(self.config.id)
            .is_some_and(|m| m.incarnation != 0 && m.incarnation != self.config.incarnation)
    }

    /// Binds the members not bound yet that this leader has heard from (itself
    /// included) to their incarnations, by one `Config` entry, when no change
    /// is pending and this leader committed in its term.
    pub(super) fn maybe_bind(&mut self) {
        let committed = self.log.committed();
        if self.membership_index > committed
            || self.log.term(committed) != Some(self.term)
            || self.transferee.is_some()
        {
            return;
        }
        // The first leader writes the bootstrap configuration into the log
        // (from then on nodes.txt no longer decides who the members are) at
        // its first heartbeat after its no-op committed, so that it binds
        // every node that answered by then, not only those that elected it:
        // a joining node (a new data dir) votes for a candidate whose log
        // holds a configuration only once that configuration binds it.
        if self.binding_of(self.config.id).is_none() {
            let bootstrap = self
                .bound_as_heard(&self.membership)
                .unwrap_or_else(|| self.membership.clone());
            self.append_config(bootstrap);
        } else if let Some(next) = self.bound_as_heard(&self.membership) {
            self.append_config(next);
        }
    }

    /// `membership` with its members not bound yet bound to the incarnations
    /// this leader heard from them (its own included); None when there are
    /// none to bind.
    fn bound_as_heard(&self, membership: &Membership) -> Option<Membership> {
        let me = self.config.id;
        let bindings: Vec<(NodeId, u64)> = membership
            .members()
            .iter()
            .filter(|m| m.incarnation == 0)
            .filter_map(|m| {
                let heard = if m.id == me {
                    self.config.incarnation
                } else {
                    self.progress.get(&m.id).map_or(0, |pr| pr.incarnation)
                };
                (heard != 0).then_some((m.id, heard))
            })
            .collect();
        if bindings.is_empty() {
            return None;
        }
        membership
            .apply(&MembershipChange::Bind(bindings))
            .inspect_err(|e| log::error!("node {me} cannot bind incarnations: {e}"))
            .ok()
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// Who this node believes leads the current term (itself when it leads).
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    pub fn log(&self) -> &RaftLog {
        &self.log
    }

    pub fn commit_index(&self) -> u64 {
        self.log.committed()
    }

    pub fn applied_index(&self) -> u64 {
        self.log.applied()
    }

    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed(),
        }
    }

    /// How many received snapshots the state machine's check refused.
    pub fn snapshots_refused(&self) -> u64 {
        self.snapshots_refused
    }

    /// The leader's view of a follower (None on other roles).
    pub fn progress_of(&self, id: NodeId) -> Option<&Progress> {
        self.progress.get(&id)
    }

    /// Every member but this node: voters and learners, all of whom a leader
    /// replicates to.
    pub(super) fn peers(&self) -> Vec<NodeId> {
        let me = self.config.id;
        self.membership
            .members()
            .iter()
            .map(|m| m.id)
            .filter(|&id| id != me)
            .collect()
    }

    /// Re-reads the configuration in force from the log (after an append that
    /// carried or may have cut a `Config` entry, a snapshot, a restart) and
    /// adjusts the leader's progress to the members.
    pub(super) fn refresh_membership(&mut self) {
        let (membership, at) = self.config_at_or_before(self.log.last_index());
        self.membership_index = at;
        if membership != self.membership {
            log::info!(
                "node {} configuration (index {at}): {membership}",
                self.id()
            );
            self.membership = membership;
            self.on_membership_changed();
        }
    }

    /// The newest configuration in the log at or before `index`, and its
    /// index; else the snapshot's, else the bootstrap one (index 0).
    fn config_at_or_before(&self, index: u64) -> (Membership, u64) {
        let first = self.log.first_index();
        let mut index = index.min(self.log.last_index());
        while index >= first && index > 0 {
            let entry = self.log.entry(index).expect("first..=last is in the log");
            if entry.kind == EntryKind::Config {
                match Membership::decode(&entry.data) {
                    Ok(m) => return (m, index),
                    // Only a leader's own encoding gets into a log (the runtime
                    // authenticates every datagram); keep looking further back.
                    Err(e) => log::error!(
                        "node {} skips the configuration entry at index {index}: {e}",
                        self.id()
                    ),
                }
            }
            index -= 1;
        }
        let m = self.log.snapshot().membership.clone();
        (m.unwrap_or_else(|| self.config.bootstrap.clone()), 0)
    }

    /// A new configuration is in force: a leader starts or stops replicating to
    /// members that came or went, and forgets a transfer to a non-voter.
    fn on_membership_changed(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let me = self.config.id;
        let next = self.log.last_index() + 1;
        let members: Vec<NodeId> = self.membership.members().iter().map(|m| m.id).collect();
        self.progress
            .retain(|id, _| *id == me || members.contains(id));
        for id in members {
            self.progress
                .entry(id)
                .or_insert_with(|| Progress::new(next));
        }
        if self
            .transferee
            .is_some_and(|t| !self.membership.is_voter(t))
        {
            self.transferee = None;
        }
    }

    /// Whether a log ending at (`last_term`, `last_index`) is more up to date
    /// than the entry our configuration comes from (the snapshot's position
    /// when the configuration is the snapshot's or the bootstrap one).
    fn newer_than_our_configuration(&self, last_term: u64, last_index: u64) -> bool {
        let (term, index) = if self.membership_index > 0 {
            let index = self.membership_index;
            (self.log.term(index).unwrap_or(0), index)
        } else {
            let meta = self.log.snapshot_meta();
            (meta.term, meta.index)
        };
        (last_term, last_index) > (term, index)
    }

    /// Proposes a single-server configuration change (leader only). Refused
    /// while another change has not committed, before this leader committed an
    /// entry of its term (§4.1: until then it cannot know whether an earlier
    /// leader's change is pending), during a transfer, when a learner to promote
    /// has not caught up or not answered as the incarnation it is bound to, or
    /// when the change itself is invalid. The entry also binds every member
    /// not bound yet that this leader has heard from. Returns the entry's index
    /// and term, as `propose` does; the new configuration is in force at once.
    pub fn propose_membership(
        &mut self,
        change: MembershipChange,
    ) -> Result<(u64, u64), ChangeRefused> {
        if self.role != Role::Leader {
            return Err(ChangeRefused::NotLeader {
                leader: self.leader,
            });
        }
        if self.transferee.is_some() {
            return Err(ChangeRefused::TransferInProgress);
        }
        if self.membership_index > self.log.committed() {
            return Err(ChangeRefused::Pending {
                index: self.membership_index,
            });
        }
        if self.log.term(self.log.committed()) != Some(self.term)
            || self.binding_of(self.config.id).is_none()
        {
            return Err(ChangeRefused::NotReady);
        }
        let next = self
            .membership
            .apply(&change)
            .map_err(ChangeRefused::Invalid)?;
        // The change binds every member not bound yet that this leader has
        // heard from, as the Bind entry `maybe_bind` appends at a heartbeat
        // would: a learner promoted before that heartbeat would otherwise be
        // an unbound voter (joining: it votes only for candidates that bind
        // it) until the next entry, and a leader lost in between left three
        // bound voters of four needing all three to elect anyone (chaos seed
        // 1796339462129267183, replayed).
        let next = self.bound_as_heard(&next).unwrap_or(next);
        // Bound voters stay a majority (or do not shrink toward none): with
        // joining nodes (`Config::joining`) they are who can elect a leader.
        let (bound, margin) = next.bound_margin();
        if margin <= 0 && margin < self.membership.bound_margin().1 {
            return Err(ChangeRefused::Unbound {
                bound,
                voters: next.voter_count(),
            });
        }
        if let MembershipChange::Promote(id) = change {
            let matched = self.progress.get(&id).map_or(0, |pr| pr.match_index);
            let last = self.log.last_index();
            // Caught up: it lacks at most what one round of pipelined appends
            // carries, so as a voter it will not hold commits back.
            if last.saturating_sub(matched) > self.config.max_inflight_appends as u64 {
                return Err(ChangeRefused::NotCaughtUp { id, matched, last });
            }
            // A voter counts only as the incarnation its configuration binds:
            // promote a learner once it answered as that one.
            let heard = self.progress.get(&id).map_or(0, |pr| pr.incarnation);
            if heard == 0 || next.get(id).is_none_or(|m| m.incarnation != heard) {
                return Err(ChangeRefused::NotHeard { id });
            }
        }
        let index = self.append_config(next);
        self.check_invariants();
        Ok((index, self.term))
    }

    /// Appends `membership` as a `Config` entry of this leader's term; it is in
    /// force at once.
    pub(super) fn append_config(&mut self, membership: Membership) -> u64 {
        let index = self.log.last_index() + 1;
        let entry = Entry {
            term: self.term,
            index,
            kind: EntryKind::Config,
            data: membership.encode(),
        };
        self.log.append(vec![entry]);
        self.refresh_membership();
        self.append_pending = true;
        index
    }

    /// A leader whose removal committed hands over: it steps down and, being no
    /// member, never campaigns again (§4.2.2).
    pub(super) fn step_down_if_removed(&mut self) {
        if self.role == Role::Leader
            && !self.membership.is_voter(self.config.id)
            && self.log.committed() >= self.membership_index
        {
            log::info!(
                "node {} steps down: the configuration without it committed",
                self.id()
            );
            let term = self.term;
            self.become_follower(term, None);
        }
    }

    pub(super) fn send(&mut self, to: NodeId, body: MessageBody) {
        let term = self.term;
        self.send_with_term(to, term, body);
    }

    pub(super) fn send_with_term(&mut self, to: NodeId, term: u64, body: MessageBody) {
        let from = self.config.id;
        let incarnation = self.config.incarnation;
        self.messages.push(Message {
            from,
            incarnation,
            to,
            term,
            body,
        });
    }

    pub(super) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let (min, max) = (
            self.config.election_ticks_min,
            self.config.election_ticks_max,
        );
        self.randomized_election_ticks = self.rng.range(min, max);
    }

    /// Leaves any role for follower in `term`, following `leader` if known.
    pub(super) fn become_follower(&mut self, term: u64, leader: Option<NodeId>) {
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        if self.role == Role::Leader {
            self.fail_pending_reads();
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.progress.clear();
        self.votes.clear();
        self.voter_incarnations.clear();
        self.transferee = None;
        self.reset_election_timer();
    }

    pub(super) fn become_leader(&mut self) {
        assert!(
            self.role == Role::Candidate,
            "only a candidate becomes leader"
        );
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.votes.clear();
        self.heartbeat_elapsed = 0;
        self.reset_election_timer();
        let next = self.log.last_index() + 1;
        let me = self.config.id;
        self.progress = self
            .membership
            .members()
            .iter()
            .map(|m| (m.id, Progress::new(next)))
            .collect();
        let own = self
            .progress
            .entry(me)
            .or_insert_with(|| Progress::new(next));
        own.incarnation = self.config.incarnation;
        own.match_index = self.log.persisted();
        own.become_replicate();
        own.recent_active = true;
        for (id, &incarnation) in &self.voter_incarnations {
            if let Some(pr) = self.progress.get_mut(id) {
                pr.incarnation = incarnation;
            }
        }
        self.voter_incarnations.clear();
        // §5.4.2 / §8: a no-op of the new term lets earlier entries commit and
        // tells the leader what is committed, so it can serve reads.
        let noop = Entry {
            term: self.term,
            index: next,
            kind: EntryKind::Noop,
            data: Vec::new(),
        };
        self.log.append(vec![noop]);
        self.bcast_append();
        self.maybe_commit();
    }

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => self.tick_election(),
        }
        self.check_invariants();
    }

    /// Takes one message from a peer. Messages addressed to another node, or not
    /// well formed (absurd terms or indexes), are ignored (the runtime drops
    /// them earlier and counts them), and so are messages from node 0 (no node
    /// has it) and vote requests from nodes that are not members.
    pub fn step(&mut self, m: Message) {
        if !m.is_well_formed() || m.to != self.config.id || m.from == self.config.id || m.from == 0
        {
            return;
        }
        // A removed node that never received its removal must not disrupt
        // the cluster it left: its vote requests are ignored, unless its log is
        // ahead of the entry our configuration comes from, so that it may hold
        // a newer configuration that added it (then ignoring it could leave
        // the only up-to-date candidate without a majority). A removed node's
        // log lacks its removal, so it is never ahead of it; CheckQuorum's
        // lease covers the rest (dissertation §4.2.3).
        if let MessageBody::RequestVote {
            last_log_index,
            last_log_term,
            ..
        } = m.body
        {
            if !self.membership.contains(m.from)
                && !self.newer_than_our_configuration(last_log_term, last_log_index)
            {
                return;
            }
        }
        self.stepping_incarnation = m.incarnation;
        if self.step_term(&m) {
            self.step_role(m);
        }
        self.check_invariants();
    }

    fn step_role(&mut self, m: Message) {
        let from = m.from;
        match m.body {
            MessageBody::RequestVote {
                pre_vote,
                last_log_index,
                last_log_term,
                bound,
                ..
            } => self.handle_request_vote(&m, pre_vote, last_log_index, last_log_term, bound),
            MessageBody::RequestVoteResponse { pre_vote, granted } => {
                self.handle_vote_response(from, m.term, pre_vote, granted)
            }
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => self.handle_append(from, prev_log_index, prev_log_term, entries, leader_commit),
            MessageBody::AppendEntriesResponse { result } => {
                self.handle_append_response(from, result)
            }
            MessageBody::Heartbeat { commit, read_seq } => {
                self.handle_heartbeat(from, commit, read_seq)
            }
            MessageBody::HeartbeatResponse { read_seq } => {
                self.handle_heartbeat_response(from, read_seq)
            }
            MessageBody::InstallSnapshot {
                meta,
                membership,
                offset,
                total_len,
                chunk,
            } => self.handle_snapshot_chunk(from, meta, membership, offset, total_len, chunk),
            MessageBody::InstallSnapshotResponse {
                snapshot_index,
                next_offset,
                done,
            } => self.handle_snapshot_response(from, snapshot_index, next_offset, done),
            MessageBody::ReadIndex { ctx } => self.handle_read_index_request(from, ctx),
            MessageBody::ReadIndexResponse { ctx, index } => {
                self.handle_read_index_response(ctx, index)
            }
            MessageBody::TimeoutNow => self.handle_timeout_now(),
        }
    }

    /// Appends a command to the log (leader only). Returns its index and term: the
    /// command took effect once an entry with this index and term is applied (a
    /// different term at that index means it was lost to a leader change).
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(u64, u64), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transferee.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        let limit = self.config.max_entry_data_bytes();
        if data.len() > limit {
            return Err(ProposeError::TooLarge { limit });
        }
        let index = self.log.last_index() + 1;
        let entry = Entry {
            term: self.term,
            index,
            kind: EntryKind::Command,
            data,
        };
        self.log.append(vec![entry]);
        // Sent from `ready`: every proposal of a round then travels in one append
        // per follower instead of one each.
        self.append_pending = true;
        self.check_invariants();
        Ok((index, self.term))
    }

    /// Whether `ready` has anything to hand out.
    pub fn has_ready(&self) -> bool {
        !self.messages.is_empty()
            || self.log.has_unstable()
            || self.log.has_committed_to_apply()
            || !self.read_states.is_empty()
            || !self.read_failures.is_empty()
            || self.hard_state() != self.last_hard_state
    }

    /// Hands out everything to persist, send, apply and serve since the last call.
    /// The caller does it in the order `Ready`'s docs give, then calls `advance`.
    pub fn ready(&mut self) -> Ready {
        if std::mem::take(&mut self.append_pending) && self.role == Role::Leader {
            self.bcast_append();
        }
        let hs = self.hard_state();
        let hard_state = (hs != self.last_hard_state).then_some(hs);
        self.last_hard_state = hs;
        let (snapshot, entries) = self.log.take_unstable();
        Ready {
            hard_state,
            snapshot,
            entries,
            messages: std::mem::take(&mut self.messages),
            committed_entries: self.log.take_committed(),
            read_states: std::mem::take(&mut self.read_states),
            read_failures: std::mem::take(&mut self.read_failures),
        }
    }

    /// The caller persisted (and fsynced) the last `Ready`. A leader now counts its
    /// own log toward commit up to what is durable.
    pub fn advance(&mut self) {
        self.log.mark_persisted();
        if self.role == Role::Leader {
            let persisted = self.log.persisted();
            let me = self.config.id;
            if let Some(own) = self.progress.get_mut(&me) {
                own.maybe_update(persisted);
            }
            self.maybe_commit();
        }
        self.check_invariants();
    }

    /// Whether the state machine should be asked for a snapshot (the applied part of
    /// the log passed the configured threshold).
    pub fn wants_snapshot(&self) -> bool {
        self.log.applied_since_snapshot() >= self.config.snapshot_threshold_entries
            || self.log.applied_bytes_since_snapshot() >= self.config.snapshot_threshold_bytes
    }

    /// Replaces the log up to `index` (applied and persisted) with the state
    /// machine's snapshot `data` taken there. Returns the snapshot for the caller
    /// to store, or None when `index` cannot be compacted.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) -> Option<Snapshot> {
        let membership = self.log.membership_at(index);
        let snapshot = self.log.compact(index, membership, data);
        self.check_invariants();
        snapshot
    }

    /// The quorum-visible invariants of this node (openraft's checker): run after
    /// every transition in debug and test builds.
    pub(super) fn check_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        self.log.check_invariants();
        if self.role == Role::Leader {
            assert_eq!(self.leader, Some(self.config.id));
            assert_eq!(self.vote, Some(self.config.id), "a leader voted for itself");
        }
        let me = self.config.id;
        assert!(self
            .progress
            .keys()
            .all(|&id| id == me || self.membership.contains(id)));
        if matches!(self.role, Role::Candidate | Role::PreCandidate) {
            assert!(self.may_campaign(), "only a voter campaigns");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::new(1, vec![1, 2, 3])
    }

    #[test]
    fn a_config_entry_that_does_not_decode_is_refused() {
        let restored = RestoredState {
            entries: vec![Entry {
                term: 1,
                index: 1,
                kind: EntryKind::Config,
                data: vec![9, 9],
            }],
            ..RestoredState::default()
        };
        let err = Raft::new(config(), restored, 1).unwrap_err();
        assert!(matches!(err, RestoreError::BadConfigEntry { index: 1, .. }));
        assert!(err.to_string().contains("index 1"), "{err}");
    }

    #[test]
    fn entries_that_do_not_follow_the_snapshot_are_refused() {
        let restored = RestoredState {
            entries: vec![Entry {
                term: 1,
                index: 5,
                kind: EntryKind::Noop,
                data: vec![],
            }],
            ..RestoredState::default()
        };
        assert_eq!(
            Raft::new(config(), restored, 1).unwrap_err(),
            RestoreError::EntriesDoNotFollowSnapshot
        );
    }

    #[test]
    fn a_node_at_the_term_limit_does_not_campaign_in_a_malformed_term() {
        let restored = RestoredState {
            hard_state: HardState {
                term: MAX_TERM_OR_INDEX,
                vote: None,
                commit: 0,
            },
            ..RestoredState::default()
        };
        let mut raft = Raft::new(config(), restored, 1).unwrap();
        for _ in 0..100 {
            raft.tick();
            let rd = raft.ready();
            assert!(rd.messages.iter().all(Message::is_well_formed));
            raft.advance();
        }
        assert_eq!(raft.term(), MAX_TERM_OR_INDEX);
        assert_eq!(raft.role(), Role::Follower);
    }

    #[test]
    fn a_single_node_elects_itself_and_commits_after_persisting() {
        let mut raft = Raft::new(Config::new(1, vec![1]), RestoredState::default(), 1).unwrap();
        for _ in 0..30 {
            raft.tick();
        }
        assert_eq!(raft.role(), Role::Leader);
        let (index, _) = raft.propose(b"x".to_vec()).unwrap();
        // Nothing commits before the caller says the log is durable.
        let rd = raft.ready();
        assert!(rd.committed_entries.iter().all(|e| e.index < index));
        assert!(rd.entries.iter().any(|e| e.index == index));
        raft.advance();
        let rd = raft.ready();
        assert!(rd.committed_entries.iter().any(|e| e.index == index));
    }
}
