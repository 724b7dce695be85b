//! Linearizable reads with ReadIndex (dissertation §6.4): the leader notes its
//! commit index, confirms with a heartbeat round that a majority still follows it,
//! and then the read may be served once the state machine applied that index.
//! A follower asks the leader for the index and serves the read itself.

use std::collections::{BTreeSet, VecDeque};

use super::node::Raft;
use super::types::*;

/// At most this many reads wait at the leader; more fail at once (the client
/// retries) rather than grow memory without bound.
pub(crate) const MAX_PENDING_READS: usize = 4096;

/// A read waiting for its heartbeat round.
#[derive(Debug)]
struct PendingRead {
    seq: u64,
    index: u64,
    /// None for this node's own client; Some(node) for a follower's request.
    requester: Option<NodeId>,
    ctx: u64,
    acks: BTreeSet<NodeId>,
}

/// The leader's reads in flight.
#[derive(Debug, Default)]
pub(super) struct ReadQueue {
    last_seq: u64,
    pending: VecDeque<PendingRead>,
    /// Reads that arrived before this leader committed an entry of its term: its
    /// commit index is not yet known to be current (§6.4 step 1).
    before_commit: Vec<(Option<NodeId>, u64)>,
}

impl ReadQueue {
    pub(super) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    fn len(&self) -> usize {
        self.pending.len() + self.before_commit.len()
    }
}

impl Raft {
    /// Starts a linearizable read tagged `ctx`. Its outcome comes in a later
    /// `Ready`: a `ReadState` (serve once applied >= its index) or a `ReadFailure`.
    pub fn read_index(&mut self, ctx: u64) {
        match (self.role, self.leader) {
            (Role::Leader, _) => self.leader_read(None, ctx),
            (_, Some(leader)) => self.send(leader, MessageBody::ReadIndex { ctx }),
            (_, None) => self.read_failures.push(ReadFailure { ctx }),
        }
        self.check_invariants();
    }

    pub(super) fn handle_read_index_request(&mut self, from: NodeId, ctx: u64) {
        if self.role == Role::Leader {
            self.leader_read(Some(from), ctx);
        } else {
            self.send(from, MessageBody::ReadIndexResponse { ctx, index: None });
        }
    }

    pub(super) fn handle_read_index_response(&mut self, ctx: u64, index: Option<u64>) {
        match index {
            Some(index) => self.read_states.push(ReadState { ctx, index }),
            None => self.read_failures.push(ReadFailure { ctx }),
        }
    }

    fn leader_read(&mut self, requester: Option<NodeId>, ctx: u64) {
        if self.reads.len() >= MAX_PENDING_READS {
            self.finish_read(requester, ctx, None);
            return;
        }
        if self.log.term(self.log.committed()) != Some(self.term) {
            self.reads.before_commit.push((requester, ctx));
            return;
        }
        self.reads.last_seq += 1;
        let seq = self.reads.last_seq;
        let acks: BTreeSet<NodeId> = if self.is_voter() {
            BTreeSet::from([self.id()])
        } else {
            BTreeSet::new() // a leader being removed, or another incarnation
        };
        let index = self.log.committed();
        self.reads.pending.push_back(PendingRead {
            seq,
            index,
            requester,
            ctx,
            acks,
        });
        if self.is_voter() && self.membership.is_quorum(&[self.id()]) {
            self.release_reads();
        } else {
            self.bcast_heartbeat(Some(seq));
        }
    }

    /// The first commit of this leader's term: reads that waited for it start.
    pub(super) fn on_commit_in_term(&mut self) {
        for (requester, ctx) in std::mem::take(&mut self.reads.before_commit) {
            self.leader_read(requester, ctx);
        }
    }

    /// A follower answered a heartbeat carrying `read_seq`: it still followed us
    /// after every read up to that sequence number was registered.
    pub(super) fn ack_reads(&mut self, from: NodeId, read_seq: u64) {
        if !self.membership.counts(from, self.stepping_incarnation) {
            return;
        }
        for read in self
            .reads
            .pending
            .iter_mut()
            .take_while(|r| r.seq <= read_seq)
        {
            read.acks.insert(from);
        }
        self.release_reads();
    }

    fn release_reads(&mut self) {
        while self
            .reads
            .pending
            .front()
            .is_some_and(|r| self.membership.is_quorum(&r.acks))
        {
            let read = self.reads.pending.pop_front().expect("checked above");
            self.finish_read(read.requester, read.ctx, Some(read.index));
        }
    }

    fn finish_read(&mut self, requester: Option<NodeId>, ctx: u64, index: Option<u64>) {
        match (requester, index) {
            (None, Some(index)) => self.read_states.push(ReadState { ctx, index }),
            (None, None) => self.read_failures.push(ReadFailure { ctx }),
            (Some(node), index) => self.send(node, MessageBody::ReadIndexResponse { ctx, index }),
        }
    }

    /// Leadership is lost: no pending read can be confirmed any more.
    pub(super) fn fail_pending_reads(&mut self) {
        let pending: Vec<(Option<NodeId>, u64)> = self
            .reads
            .pending
            .drain(..)
            .map(|r| (r.requester, r.ctx))
            .chain(self.reads.before_commit.drain(..))
            .collect();
        for (requester, ctx) in pending {
            self.finish_read(requester, ctx, None);
        }
    }
}
