//! Elections (§5.2) with PreVote and CheckQuorum (dissertation §9.6), the term
//! rules every message passes through first, and leadership transfer (§3.10).

use super::node::Raft;
use super::types::*;

impl Raft {
    /// Follower and candidate clock: campaign when no leader was heard from for a
    /// randomized election timeout.
    pub(super) fn tick_election(&mut self) {
        // A learner's clock runs too: its leader lease must expire when the
        // leader goes, or it would ignore every candidate (including the one
        // whose configuration promoted it) for good.
        self.election_elapsed += 1;
        if self.election_elapsed >= self.randomized_election_ticks {
            if self.may_campaign() {
                self.campaign(false);
            } else {
                // A learner, another incarnation, or a node the configuration
                // no longer has: it never campaigns (nobody would count it).
                self.election_elapsed = self.config.election_ticks_min;
            }
        }
    }

    /// Leader clock: heartbeats, CheckQuorum, and the transfer deadline.
    pub(super) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.transferee.is_some() {
            self.transfer_elapsed += 1;
            if self.transfer_elapsed >= self.config.election_ticks_min {
                self.transferee = None;
            }
        }
        if self.election_elapsed >= self.config.election_ticks_min {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.quorum_recently_active() {
                log::info!(
                    "node {} steps down: no quorum heard in term {}",
                    self.id(),
                    self.term
                );
                let term = self.term;
                self.become_follower(term, None);
                return;
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.bcast_heartbeat(None);
            self.maybe_bind();
        }
    }

    /// CheckQuorum: did a majority of the voters (counting ourselves if we
    /// vote) answer since the last check? Resets the marks for the next round.
    fn quorum_recently_active(&mut self) -> bool {
        let me = self.id();
        let mut active = Vec::new();
        for (&id, pr) in self.progress.iter_mut() {
            if id == me || pr.recent_active {
                active.push((id, pr.incarnation));
            }
            pr.recent_active = id == me;
        }
        self.membership.is_quorum_of(active)
    }

    /// Starts an election: a pre-vote round first when configured, unless this is a
    /// leadership transfer, which goes straight to a real vote.
    pub(super) fn campaign(&mut self, transfer: bool) {
        if !self.may_campaign() {
            return;
        }
        if !can_increment_term(self.term) {
            // Only forged terms get here (see `MAX_TERM_STEP`); a campaign in
            // a malformed term would be ignored by every peer anyway.
            log::warn!(
                "node {} cannot campaign: term {} is at the limit",
                self.id(),
                self.term
            );
            self.reset_election_timer();
            return;
        }
        if self.config.pre_vote && !transfer {
            self.become_pre_candidate();
        } else {
            self.become_candidate(transfer);
        }
    }

    fn become_pre_candidate(&mut self) {
        // A pre-candidate keeps its term and vote: it only asks whether it *could*
        // win, so a node cut off from the cluster does not inflate terms.
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.reset_election_timer();
        self.request_votes(true, false);
    }

    fn become_candidate(&mut self, transfer: bool) {
        self.term += 1;
        self.vote = Some(self.id());
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.voter_incarnations.clear();
        self.reset_election_timer();
        self.request_votes(false, transfer);
    }

    fn request_votes(&mut self, pre_vote: bool, transfer: bool) {
        let me = self.id();
        // Another incarnation of this id (a lost data dir) does not count
        // its own vote: it may have given it to someone else before; nor does
        // a joining node with entries (its log may lack committed ones).
        if self.is_voter() && self.joining_may_grant(self.binding_of(me)) {
            self.votes.insert(me, true);
        }
        if self.won_election() {
            self.finish_election(pre_vote);
            return;
        }
        let term = if pre_vote { self.term + 1 } else { self.term };
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        for peer in self.peers() {
            let bound = self.binding_of(peer);
            let body = MessageBody::RequestVote {
                pre_vote,
                last_log_index,
                last_log_term,
                transfer,
                bound,
            };
            self.send_with_term(peer, term, body);
        }
    }

    /// Granted votes from a majority of the voters in force (a vote from a
    /// learner or a stranger counts for nothing).
    fn won_election(&self) -> bool {
        let granted = self.votes.iter().filter(|(_, &g)| g).map(|(id, _)| id);
        self.membership.is_quorum(granted)
    }

    fn lost_election(&self) -> bool {
        let refused = self.votes.iter().filter(|(_, &g)| !g).map(|(id, _)| id);
        self.membership.is_quorum(refused)
    }

    fn finish_election(&mut self, pre_vote: bool) {
        if pre_vote {
            self.become_candidate(false);
        } else {
            self.become_leader();
            log::debug!("node {} became leader of term {}", self.id(), self.term);
        }
    }

    /// The term rules every message passes first. Returns false when the message
    /// was dealt with here (stale, or refused by the leader lease).
    pub(super) fn step_term(&mut self, m: &Message) -> bool {
        use MessageBody::*;
        if m.term > self.term {
            if !term_within_reach(self.term, m.term) {
                log::debug!(
                    "node {} ignores a message of term {} from node {}: too far above its term {}",
                    self.id(),
                    m.term,
                    m.from,
                    self.term
                );
                return false;
            }
            match m.body {
                RequestVote {
                    pre_vote, transfer, ..
                } => {
                    // CheckQuorum's lease: while we hear from a live leader, a
                    // disruptive candidate gets no answer at all (§9.6).
                    let in_lease = self.config.check_quorum
                        && self.leader.is_some()
                        && self.election_elapsed < self.config.election_ticks_min;
                    if in_lease && !transfer {
                        return false;
                    }
                    if pre_vote {
                        return true; // a pre-vote never changes our term
                    }
                    self.become_follower(m.term, None);
                }
                RequestVoteResponse {
                    pre_vote: true,
                    granted: true,
                } => {}
                AppendEntries { .. } | Heartbeat { .. } | InstallSnapshot { .. } => {
                    self.become_follower(m.term, Some(m.from));
                }
                _ => self.become_follower(m.term, None),
            }
            return true;
        }
        if m.term < self.term {
            self.answer_stale(m);
            return false;
        }
        true
    }

    /// A message from an older term. A stale leader is told the new term so it
    /// steps down (with CheckQuorum/PreVote it would otherwise never hear it: we
    /// refuse its votes); a stale pre-candidate is told it cannot win.
    fn answer_stale(&mut self, m: &Message) {
        match m.body {
            MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. } => {
                let result = AppendResult::Rejected {
                    rejected_index: 0,
                    hint_term: 0,
                    hint_index: 0,
                };
                self.send(m.from, MessageBody::AppendEntriesResponse { result });
            }
            MessageBody::RequestVote { pre_vote: true, .. } => {
                self.send(
                    m.from,
                    MessageBody::RequestVoteResponse {
                        pre_vote: true,
                        granted: false,
                    },
                );
            }
            _ => {}
        }
    }

    /// The incarnation this node's configuration binds `id` to (`Some(0)`:
    /// none), or None while its log holds no configuration (the first leader
    /// writes the bootstrap one, binding every node it heard from).
    pub(super) fn binding_of(&self, id: NodeId) -> Option<u64> {
        self.configured()
            .then(|| self.membership.get(id).map_or(0, |m| m.incarnation))
    }

    /// Whether a joining node (`Config::joining`) may grant its vote to a
    /// candidate whose configuration binds this node to `bound`: when it
    /// binds it as this incarnation, or when the candidate's log holds no
    /// configuration yet (a new cluster's first moments, in which every node
    /// is joining). A candidate whose configuration does not bind this node
    /// may be a voter left behind before the cluster bound this id's lost
    /// incarnation: its log may lack what that incarnation acknowledged (hunt
    /// seed 104532308). Always true for a node that is not joining.
    pub(super) fn joining_may_grant(&self, bound: Option<u64>) -> bool {
        !self.is_joining() || bound.is_none_or(|b| b == self.config.incarnation)
    }

    pub(super) fn handle_request_vote(
        &mut self,
        m: &Message,
        pre_vote: bool,
        last_index: u64,
        last_term: u64,
        bound: Option<u64>,
    ) {
        let can_vote = if pre_vote {
            // m.term is the term the pre-candidate would run in.
            m.term > self.term
                || self.vote == Some(m.from)
                || (self.vote.is_none() && self.leader.is_none())
        } else {
            // Once this term's leader is known, nobody else gets our vote (§5.2).
            self.vote == Some(m.from) || (self.vote.is_none() && self.leader.is_none())
        };
        // A learner answers too: the candidate may hold a newer configuration
        // in which it votes (its promotion not yet here). Only the candidate's
        // configuration decides whose votes count.
        // A node the configuration knows as another incarnation (its data dir
        // was lost) has forgotten its votes: it grants none.
        let granted = can_vote
            && !self.is_stale_incarnation()
            && self.joining_may_grant(bound)
            && self.log.is_up_to_date(last_index, last_term);
        if granted && !pre_vote {
            self.vote = Some(m.from);
            self.reset_election_timer();
        }
        // A granted pre-vote echoes the pre-candidate's future term so it counts.
        let term = if pre_vote && granted {
            m.term
        } else {
            self.term
        };
        self.send_with_term(
            m.from,
            term,
            MessageBody::RequestVoteResponse { pre_vote, granted },
        );
    }

    pub(super) fn handle_vote_response(
        &mut self,
        from: NodeId,
        term: u64,
        pre_vote: bool,
        granted: bool,
    ) {
        let expected = match self.role {
            Role::PreCandidate => pre_vote && term == self.term + 1,
            Role::Candidate => !pre_vote && term == self.term,
            _ => false,
        };
        if !expected {
            return;
        }
        if !self.membership.counts(from, self.stepping_incarnation) {
            return; // a learner's, or another incarnation's: it counts for nothing
        }
        self.votes.insert(from, granted);
        if granted && !pre_vote {
            // A new leader binds whom it heard from (the first one in the
            // bootstrap configuration it writes).
            self.voter_incarnations
                .insert(from, self.stepping_incarnation);
        }
        if self.won_election() {
            self.finish_election(pre_vote);
        } else if self.lost_election() {
            let term = self.term;
            self.become_follower(term, None);
        }
    }

    /// Hands leadership to `target` (a node stopping gracefully does this first).
    /// Proposals are refused meanwhile; the target is brought up to date and then
    /// told to campaign at once. Abandoned after an election timeout.
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if target == self.id() || !self.membership.is_voter(target) {
            return Ok(());
        }
        self.transferee = Some(target);
        self.transfer_elapsed = 0;
        self.maybe_send_timeout_now();
        if self.transferee.is_some() {
            self.send_append(target, true);
        }
        self.check_invariants();
        Ok(())
    }

    /// During a transfer, once the target's log matches ours, tell it to campaign.
    pub(super) fn maybe_send_timeout_now(&mut self) {
        let Some(target) = self.transferee else {
            return;
        };
        let caught_up = self
            .progress
            .get(&target)
            .is_some_and(|pr| pr.match_index == self.log.last_index());
        if caught_up {
            self.send(target, MessageBody::TimeoutNow);
        }
    }

    pub(super) fn handle_timeout_now(&mut self) {
        if self.role != Role::Leader {
            log::debug!("node {} campaigns on the leader's request", self.id());
            self.campaign(true);
        }
    }

    /// Picks the most up-to-date follower to hand leadership to (None without
    /// followers).
    pub(crate) fn best_transfer_target(&self) -> Option<NodeId> {
        let me = self.id();
        self.progress
            .iter()
            .filter(|(&id, _)| id != me && self.membership.is_voter(id))
            .max_by_key(|(&id, pr)| (pr.recent_active, pr.match_index, std::cmp::Reverse(id)))
            .map(|(&id, _)| id)
    }
}
