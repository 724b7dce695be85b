//! Log replication (§5.3): appends with the consistency check and fast
//! backtracking, heartbeats, and commit by counting replicas of an entry of the
//! current term (§5.4.2, Figure 8).

use super::node::Raft;
use super::progress::{Progress, ProgressState};
use super::types::*;

impl Raft {
    /// Sends what each follower is missing (after a proposal).
    pub(super) fn bcast_append(&mut self) {
        for peer in self.peers() {
            self.send_append(peer, false);
        }
    }

    /// Sends one append to `to` unless flow control holds it back. An empty append
    /// goes out only with `send_if_empty` (a probe, or news of the commit index).
    /// Returns whether a message was sent.
    pub(super) fn send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let max_inflight = self.config.max_inflight_appends;
        let Some(pr) = self.progress.get(&to) else {
            return false;
        };
        if pr.is_paused(max_inflight) {
            return false;
        }
        let next = pr.next_index;
        let prev_log_index = next - 1;
        let Some(prev_log_term) = self.log.term(prev_log_index) else {
            // The entries it needs were compacted away: send the snapshot instead.
            return self.send_snapshot(to);
        };
        let budget = self.config.max_message_bytes - MESSAGE_OVERHEAD_BYTES;
        let entries = self.log.entries_from(next, budget);
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let last = prev_log_index + entries.len() as u64;
        let leader_commit = self.log.committed();
        self.progress
            .get_mut(&to)
            .expect("checked above")
            .sent_append(last);
        let body = MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        };
        self.send(to, body);
        true
    }

    /// Heartbeats to every follower. The commit index sent is capped at what the
    /// follower is known to hold, so it never commits an entry it has not matched.
    pub(super) fn bcast_heartbeat(&mut self, read_seq: Option<u64>) {
        let read_seq = read_seq.unwrap_or(self.reads.last_seq());
        let committed = self.log.committed();
        for peer in self.peers() {
            let matched = self.progress.get(&peer).map_or(0, |pr| pr.match_index);
            let commit = matched.min(committed);
            self.send(peer, MessageBody::Heartbeat { commit, read_seq });
        }
    }

    /// A message from the current leader: whatever we were, we follow it now.
    pub(super) fn follow(&mut self, leader: NodeId) {
        if self.role != Role::Follower || self.leader != Some(leader) {
            let term = self.term;
            self.become_follower(term, Some(leader));
        } else {
            self.reset_election_timer();
        }
    }

    /// Figure 2, AppendEntries receiver.
    pub(super) fn handle_append(
        &mut self,
        from: NodeId,
        prev_log_index: u64,
        prev_log_term: u64,
        entries: Vec<Entry>,
        leader_commit: u64,
    ) {
        self.follow(from);
        let committed = self.log.committed();
        if prev_log_index < committed {
            // Everything up to our commit index matches any leader's log (§5.4).
            let result = AppendResult::Accepted {
                match_index: committed,
            };
            self.send(from, MessageBody::AppendEntriesResponse { result });
            return;
        }
        let contiguous = entries
            .iter()
            .enumerate()
            .all(|(i, e)| prev_log_index.checked_add(1 + i as u64) == Some(e.index));
        if !contiguous {
            return; // a malformed append from a buggy or hostile peer: ignore it
        }
        let result = if self.log.matches(prev_log_index, prev_log_term) {
            // A configuration entry in the append, or one that a conflict may
            // have cut off: the configuration in force must be read again.
            let recheck = self.membership_index > prev_log_index
                || entries.iter().any(|e| e.kind == EntryKind::Config);
            let match_index = self.log.append_after(prev_log_index, entries);
            if recheck {
                self.refresh_membership();
            }
            self.log.commit_to(leader_commit.min(match_index));
            AppendResult::Accepted { match_index }
        } else {
            self.rejection(prev_log_index)
        };
        self.send(from, MessageBody::AppendEntriesResponse { result });
    }

    /// The consistency check failed at `rejected_index`: tell the leader where our
    /// log stands so it can skip a whole conflicting term at once.
    fn rejection(&self, rejected_index: u64) -> AppendResult {
        if rejected_index > self.log.last_index() {
            return AppendResult::Rejected {
                rejected_index,
                hint_term: 0,
                hint_index: self.log.last_index() + 1,
            };
        }
        let hint_term = self
            .log
            .term(rejected_index)
            .expect("above the commit index is in the log");
        AppendResult::Rejected {
            rejected_index,
            hint_term,
            hint_index: self.log.first_index_of_term_at(rejected_index),
        }
    }

    pub(super) fn handle_append_response(&mut self, from: NodeId, result: AppendResult) {
        let last_index = self.log.last_index();
        let Some(pr) = self.answered_by(from) else {
            return;
        };
        match result {
            // A follower cannot hold more than we sent: a buggy or hostile answer.
            AppendResult::Accepted { match_index } if match_index > last_index => {}
            AppendResult::Accepted { match_index } => {
                if pr.maybe_update(match_index) {
                    match pr.state {
                        ProgressState::Probe => pr.become_replicate(),
                        ProgressState::Snapshot if match_index >= pr.snapshot_index => {
                            pr.become_replicate()
                        }
                        _ => {}
                    }
                    self.maybe_commit();
                    if self.transferee == Some(from) {
                        self.maybe_send_timeout_now();
                    }
                }
                while self.send_append(from, false) {}
            }
            AppendResult::Rejected {
                rejected_index: 0, ..
            } => {}
            AppendResult::Rejected {
                rejected_index,
                hint_term,
                hint_index,
            } => {
                let resume_at = if hint_term > 0 {
                    match self.log.last_index_of_term(hint_term, rejected_index) {
                        Some(index) => index + 1,
                        None => hint_index,
                    }
                } else {
                    hint_index
                };
                let pr = self.progress.get_mut(&from).expect("checked above");
                if pr.maybe_back_off(rejected_index, resume_at.max(1)) {
                    self.send_append(from, true);
                }
            }
        }
    }

    pub(super) fn handle_heartbeat(&mut self, from: NodeId, commit: u64, read_seq: u64) {
        self.follow(from);
        self.log.commit_to(commit);
        self.send(from, MessageBody::HeartbeatResponse { read_seq });
    }

    pub(super) fn handle_heartbeat_response(&mut self, from: NodeId, read_seq: u64) {
        let max_inflight = self.config.max_inflight_appends;
        let last_index = self.log.last_index();
        let Some(pr) = self.answered_by(from) else {
            return;
        };
        pr.on_heartbeat_answer(max_inflight);
        if pr.state == ProgressState::Snapshot {
            self.send_snapshot(from);
        } else if pr.match_index < last_index {
            self.send_append(from, true);
        }
        self.ack_reads(from, read_seq);
    }

    /// A follower answered: the leader's progress for it, marked active for
    /// CheckQuorum (None when we no longer lead, or for a stranger).
    pub(super) fn answered_by(&mut self, from: NodeId) -> Option<&mut Progress> {
        if self.role != Role::Leader {
            return None;
        }
        let incarnation = self.stepping_incarnation;
        let next = self.log.last_index() + 1;
        let pr = self.progress.get_mut(&from)?;
        if pr.incarnation != incarnation {
            if pr.incarnation != 0 {
                // Another incarnation (its data dir was replaced): what the old
                // one held is gone; probe the new one from the end.
                *pr = Progress::new(next);
            }
            pr.incarnation = incarnation;
        }
        pr.recent_active = true;
        Some(pr)
    }

    /// Commits the highest index held by a majority of the voters in force, if
    /// its entry is of the current term: an older-term entry is never committed
    /// by counting replicas (Figure 8), only indirectly by a later entry of this
    /// term. A leader that the configuration no longer has does not count itself.
    pub(super) fn maybe_commit(&mut self) -> bool {
        let mut matched: Vec<u64> = self
            .membership
            .voters()
            .map(|id| {
                self.progress
                    .get(&id)
                    .filter(|pr| self.membership.counts(id, pr.incarnation))
                    .map_or(0, |pr| pr.match_index)
            })
            .collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&index) = matched.get(self.membership.quorum() - 1) else {
            return false;
        };
        if index <= self.log.committed() || self.log.term(index) != Some(self.term) {
            return false;
        }
        self.log.commit_to(index);
        self.on_commit_in_term();
        self.step_down_if_removed();
        if self.role != Role::Leader {
            return true;
        }
        for peer in self.peers() {
            self.send_append(peer, true);
        }
        true
    }
}
