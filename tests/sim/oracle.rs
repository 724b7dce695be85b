//! The simulator's oracle: it sees every entry written, every message sent, every
//! entry applied and every read served, and panics at the first violation of a
//! safety property, naming the seed.

use std::collections::HashMap;

use raftlb::raft::{
    Entry, EntryKind, Membership, Message, MessageBody, NodeId, Raft, RestoredState, Role, Snapshot,
};

use super::statemachine::{entry_hash, mix, Counter};
use super::Cluster;

#[derive(Default)]
pub struct Oracle {
    /// Election safety: term -> the one leader it had.
    leaders: HashMap<u64, NodeId>,
    /// Log matching: (index, term) -> (entry hash, term of the previous entry).
    entries: HashMap<(u64, u64), (u64, u64)>,
    /// The committed sequence as applied anywhere: [i - 1] = (term, hash) of index i.
    committed: Vec<(u64, u64)>,
    /// The state machine's hash chain after index i ([i - 1]).
    chains: Vec<u64>,
    /// The last term in which each node was checked for leader completeness.
    completeness_checked: HashMap<NodeId, u64>,
    /// What each node promised in messages it sent: the highest term, and the vote
    /// it cast (term, candidate). A restart must remember both.
    promises: HashMap<NodeId, (u64, Option<(u64, NodeId)>)>,
    /// Proposals: (index, term) -> (proposer, value).
    proposals: HashMap<(u64, u64), (NodeId, u64)>,
    /// Values whose proposer applied them: their client was told "done".
    pub acknowledged: Vec<u64>,
    max_acknowledged_index: u64,
    /// Reads in flight: ctx -> the highest acknowledged write index at its start.
    reads: HashMap<u64, u64>,
    pub reads_checked: u64,
    pub elections: u64,
    /// The bootstrap configuration, in force until a configuration commits.
    pub committed_config: Option<Membership>,
    /// Every configuration committed, with its index, in log order.
    committed_configs: Vec<(u64, Membership)>,
    /// Configuration entries committed.
    pub changes_committed: u64,
    /// The term in which each index was first known committed, by the leader
    /// that committed it ([i - 1] for index i, as far as leaders were seen).
    commit_terms: Vec<u64>,
}

/// Voters in one configuration and not the other.
fn voters_changed(a: &Membership, b: &Membership) -> usize {
    let only = |x: &Membership, y: &Membership| x.voters().filter(|&v| !y.is_voter(v)).count();
    only(a, b) + only(b, a)
}

impl Oracle {
    /// An oracle for a cluster bootstrapped with `bootstrap`.
    pub fn with_bootstrap(bootstrap: Membership) -> Oracle {
        Oracle {
            committed_config: Some(bootstrap),
            ..Oracle::default()
        }
    }

    pub fn committed_len(&self) -> u64 {
        self.committed.len() as u64
    }

    /// Log matching (§5.3): entries with the same index and term are identical and
    /// follow the same previous term (hence, by induction, identical prefixes).
    pub fn check_entries(&mut self, id: NodeId, raft: &Raft, written: &[Entry]) {
        for e in written {
            let prev_term = if e.index == 1 {
                0
            } else {
                raft.log()
                    .term(e.index - 1)
                    .expect("entries follow the log")
            };
            let seen = (entry_hash(e), prev_term);
            let known = *self.entries.entry((e.index, e.term)).or_insert(seen);
            assert_eq!(
                known, seen,
                "log matching violated at node {id}: index {} term {}",
                e.index, e.term
            );
        }
    }

    /// Election safety and leader completeness, after every step.
    pub fn check_node(&mut self, id: NodeId, raft: &Raft, seed: u64) {
        let term = raft.term();
        if raft.role() == Role::Leader {
            // A leader is the first to know an index committed (followers learn
            // it from a later message): it was committed in this term.
            let commit = raft.commit_index() as usize;
            while self.commit_terms.len() < commit {
                self.commit_terms.push(term);
            }
        }
        if raft.role() == Role::Leader {
            // Single-server changes: what a leader uses differs by one voter at
            // most from the configuration its own committed prefix ends with,
            // so every majority of the one overlaps every majority of the other
            // (§4.1). (A deposed leader may lag the cluster's newest committed
            // configuration; it can no longer commit anything.)
            let commit = raft.commit_index();
            let committed = self
                .committed_configs
                .iter()
                .rev()
                .find(|(index, _)| *index <= commit)
                .map(|(_, m)| m)
                .or(self.committed_config.as_ref());
            if let Some(committed) = committed {
                let changed = voters_changed(committed, raft.membership());
                assert!(
                    changed <= 1,
                    "seed {seed}: leader {id} of term {term} uses {} (index {}, commit {commit}) while {committed} is committed ({changed} voters apart)",
                    raft.membership(),
                    raft.membership_index(),
                );
            }
        }
        // A leader whose removal is pending keeps leading until it commits
        // (§4.2.2), and a node whose removal it does not know committed may
        // campaign (to finish it); otherwise only voters campaign or lead.
        let removal_pending = raft.membership_index() > raft.commit_index();
        if matches!(
            raft.role(),
            Role::Leader | Role::Candidate | Role::PreCandidate
        ) && !removal_pending
        {
            assert!(
                raft.membership().is_voter(id),
                "seed {seed}: node {id} campaigns or leads without a vote in {}",
                raft.membership()
            );
        }
        if raft.role() == Role::Leader {
            let leader = *self.leaders.entry(term).or_insert(id);
            assert_eq!(
                leader, id,
                "seed {seed}: two leaders in term {term}: {leader} and {id}"
            );
            if self.completeness_checked.get(&id) != Some(&term) {
                self.completeness_checked.insert(id, term);
                self.elections += 1;
                self.check_completeness(id, raft, seed);
            }
        }
        let commit = raft.commit_index();
        if commit > raft.log().snapshot_meta().index && commit <= self.committed_len() {
            let expected = self.committed[(commit - 1) as usize].0;
            assert_eq!(
                raft.log().term(commit),
                Some(expected),
                "seed {seed}: node {id} committed a different entry at {commit}"
            );
        }
    }

    /// Leader completeness (§5.4): a new leader holds every entry committed in
    /// an earlier term. (A candidate of an older term can still win late, with
    /// votes cast before its voters saw a newer term; it owes nothing to the
    /// newer terms, and can commit nothing that conflicts with them.)
    fn check_completeness(&self, id: NodeId, raft: &Raft, seed: u64) {
        let log = raft.log();
        let term = raft.term();
        let owed = self
            .commit_terms
            .iter()
            .take(self.committed.len())
            .take_while(|&&t| t < term)
            .count() as u64;
        assert!(
            log.last_index() >= owed,
            "seed {seed}: leader {id} of term {} lacks committed entries (last {} < {})",
            raft.term(),
            log.last_index(),
            owed
        );
        for index in log.first_index()..=owed {
            let (term, hash) = self.committed[(index - 1) as usize];
            let entry = log.entry(index).expect("within the log");
            if std::env::var("RAFTLB_SIM_DEBUG").is_ok() && entry.term != term {
                eprintln!("index {index}: committed term {term}, leader {id} has term {} kind {:?}; leader config {} at {}", entry.term, entry.kind, raft.membership(), raft.membership_index());
            }
            assert!(
                entry.term == term && entry_hash(entry) == hash,
                "seed {seed}: leader {id} of term {} has a different entry at committed index {index}",
                raft.term()
            );
        }
    }

    /// State machine safety: every node applies the same entry at each index.
    pub fn applied(&mut self, id: NodeId, entry: &Entry) {
        let index = entry.index;
        let seen = (entry.term, entry_hash(entry));
        let len = self.committed_len();
        if index <= len {
            assert_eq!(
                self.committed[(index - 1) as usize],
                seen,
                "node {id} applied a different entry at {index}"
            );
        } else {
            assert_eq!(
                index,
                len + 1,
                "node {id} applied {index} past the known committed prefix {len}"
            );
            if std::env::var("RAFTLB_SIM_DEBUG").is_ok() {
                eprintln!(
                    "first applied at {index}: by node {id}, term {}, {:?}",
                    entry.term, entry.kind
                );
            }
            let chain = mix(self.chains.last().copied().unwrap_or(0), &[seen.1], &[]);
            self.committed.push(seen);
            self.chains.push(chain);
            if entry.kind == EntryKind::Config {
                let next = Membership::decode(&entry.data)
                    .unwrap_or_else(|e| panic!("a committed configuration does not decode: {e}"));
                let previous = self
                    .committed_configs
                    .last()
                    .map(|(_, m)| m)
                    .or(self.committed_config.as_ref());
                if let Some(previous) = previous {
                    assert!(
                        voters_changed(previous, &next) <= 1,
                        "committed configurations {previous} then {next} at {index} differ by more than one voter"
                    );
                }
                self.committed_configs.push((index, next));
                self.changes_committed += 1;
            }
        }
        if let Some(&(proposer, value)) = self.proposals.get(&(index, entry.term)) {
            let data =
                u64::from_le_bytes(entry.data.as_slice().try_into().expect("8-byte commands"));
            assert_eq!(
                data, value,
                "the entry at {index} is not what was proposed there"
            );
            if proposer == id {
                self.acknowledged.push(value);
                self.max_acknowledged_index = self.max_acknowledged_index.max(index);
            }
        }
    }

    /// A snapshot installed from the leader holds exactly the committed history.
    pub fn check_snapshot(&self, id: NodeId, snapshot: &Snapshot) {
        let index = snapshot.meta.index;
        assert!(
            index <= self.committed_len(),
            "node {id} installed a snapshot beyond the committed prefix"
        );
        assert_eq!(
            Counter::chain_of(snapshot),
            self.chains[(index - 1) as usize],
            "node {id} installed a wrong snapshot"
        );
    }

    pub fn proposed(&mut self, proposer: NodeId, index: u64, term: u64, value: u64) {
        self.proposals.insert((index, term), (proposer, value));
    }

    /// Remembers the term and vote each message promises.
    pub fn sent(&mut self, m: &Message) {
        let (term, vote) = match m.body {
            MessageBody::RequestVote { pre_vote: true, .. }
            | MessageBody::RequestVoteResponse { pre_vote: true, .. } => return,
            MessageBody::RequestVote { .. } => (m.term, Some((m.term, m.from))),
            MessageBody::RequestVoteResponse { granted: true, .. } => {
                (m.term, Some((m.term, m.to)))
            }
            _ => (m.term, None),
        };
        let promise = self.promises.entry(m.from).or_insert((0, None));
        promise.0 = promise.0.max(term);
        if vote.is_some() {
            promise.1 = vote;
        }
    }

    /// A node lost its disk: what it promised is gone with it (the cluster must
    /// not count on it; the other checks say whether it does).
    pub fn forget_promises(&mut self, id: NodeId) {
        self.promises.remove(&id);
    }

    /// Durability: a restarted node remembers its term and the vote it cast.
    pub fn check_restart(&self, id: NodeId, restored: &RestoredState) {
        let Some(&(term, vote)) = self.promises.get(&id) else {
            return;
        };
        let hs = restored.hard_state;
        assert!(
            hs.term >= term,
            "node {id} forgot its term: restarted at {} after promising {term}",
            hs.term
        );
        if let Some((vote_term, candidate)) = vote {
            if hs.term == vote_term {
                assert_eq!(
                    hs.vote,
                    Some(candidate),
                    "node {id} forgot its vote in term {vote_term}"
                );
            }
        }
    }

    pub fn read_started(&mut self, ctx: u64) {
        self.reads.insert(ctx, self.max_acknowledged_index);
    }

    /// Linearizable reads: a read sees every write acknowledged before it started.
    pub fn read_served(&mut self, ctx: u64, index: u64, seed: u64) {
        if let Some(floor) = self.reads.remove(&ctx) {
            assert!(
                index >= floor,
                "seed {seed}: read {ctx} at index {index} misses a write acknowledged at {floor}"
            );
            self.reads_checked += 1;
        }
    }

    /// No acknowledged write is lost: every live node holds every one.
    pub fn check_acknowledged(&self, cluster: &Cluster, seed: u64) {
        for id in cluster.members_up() {
            let sm = &cluster.node(id).sm;
            for value in &self.acknowledged {
                assert!(
                    sm.contains(*value),
                    "seed {seed}: node {id} lost acknowledged value {value}"
                );
            }
        }
    }
}
