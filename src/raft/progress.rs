//! What a leader knows of each follower's log, and the flow control that follows
//! from it: probe one append at a time until the logs match, then pipeline up to a
//! bounded number of appends, or send a snapshot when the entries are gone.

use std::collections::VecDeque;

/// How the leader replicates to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Where the follower's log matches is unknown: one append at a time, each
    /// waiting for its answer (or the next heartbeat), backtracking on rejection.
    Probe,
    /// The logs match up to `match_index`: appends are pipelined, `next_index`
    /// advanced optimistically, at most `max_inflight_appends` unanswered.
    Replicate,
    /// The follower needs entries the leader compacted: it receives the snapshot
    /// in chunks, one at a time, resuming from the offset it reports.
    Snapshot,
}

/// The leader's view of one follower (Figure 2's nextIndex and matchIndex, plus
/// flow control).
#[derive(Clone, Debug)]
pub struct Progress {
    pub match_index: u64,
    pub next_index: u64,
    pub state: ProgressState,
    /// Probe: an append is outstanding; send nothing until it is answered or the
    /// next heartbeat answer says the follower is alive.
    pub probe_sent: bool,
    /// Replicate: the last index of each unanswered append, oldest first.
    inflights: VecDeque<u64>,
    /// Snapshot: the index of the snapshot being sent, and how many of its bytes
    /// the follower acknowledged.
    pub snapshot_index: u64,
    pub snapshot_offset: u64,
    /// Heard from since the last CheckQuorum round.
    pub recent_active: bool,
    /// The incarnation last heard from (0: none yet). Its acknowledgements
    /// count only while it is the one the member is bound to.
    pub incarnation: u64,
}

impl Progress {
    pub fn new(next_index: u64) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: VecDeque::new(),
            snapshot_index: 0,
            snapshot_offset: 0,
            recent_active: false,
            incarnation: 0,
        }
    }

    pub(crate) fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            self.next_index = self.next_index.max(self.snapshot_index + 1);
        }
        self.state = ProgressState::Probe;
        self.next_index = self.next_index.max(self.match_index + 1);
        self.probe_sent = false;
        self.inflights.clear();
        self.snapshot_index = 0;
        self.snapshot_offset = 0;
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflights.clear();
        self.snapshot_index = 0;
        self.snapshot_offset = 0;
    }

    pub(crate) fn become_snapshot(&mut self, snapshot_index: u64) {
        self.state = ProgressState::Snapshot;
        self.probe_sent = false;
        self.inflights.clear();
        if self.snapshot_index != snapshot_index {
            self.snapshot_index = snapshot_index;
            self.snapshot_offset = 0;
        }
    }

    /// Records an accepted append. Returns false when it tells nothing new (a
    /// late or duplicated answer).
    pub(crate) fn maybe_update(&mut self, match_index: u64) -> bool {
        let updated = match_index > self.match_index;
        if updated {
            self.match_index = match_index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(match_index + 1);
        while self
            .inflights
            .front()
            .is_some_and(|&last| last <= match_index)
        {
            self.inflights.pop_front();
        }
        updated
    }

    /// Records that an append ending at `last_index` was sent.
    pub(crate) fn sent_append(&mut self, last_index: u64) {
        match self.state {
            ProgressState::Replicate => {
                if last_index >= self.next_index {
                    self.next_index = last_index + 1;
                    self.inflights.push_back(last_index);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => {}
        }
    }

    /// Whether the leader must hold back appends to this follower for now.
    pub(crate) fn is_paused(&self, max_inflight: usize) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.len() >= max_inflight,
            ProgressState::Snapshot => true,
        }
    }

    /// A heartbeat answer proves the follower alive: let one more append through,
    /// so a lost append cannot stall replication for good.
    pub(crate) fn on_heartbeat_answer(&mut self, max_inflight: usize) {
        self.probe_sent = false;
        if self.inflights.len() >= max_inflight {
            self.inflights.pop_front();
        }
    }

    /// A rejection of an append that went out at `rejected_index`: move
    /// `next_index` back to `resume_at` and probe from there. Returns false for a
    /// stale rejection (answering an append older than what we already know).
    pub(crate) fn maybe_back_off(&mut self, rejected_index: u64, resume_at: u64) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected_index <= self.match_index {
                return false;
            }
        } else if rejected_index != self.next_index - 1 {
            return false;
        }
        self.next_index = resume_at.min(rejected_index).max(self.match_index + 1);
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.inflights.clear();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicate_pipelines_up_to_the_bound() {
        let mut pr = Progress::new(1);
        pr.become_replicate();
        for last in 1..=3 {
            assert!(!pr.is_paused(3));
            pr.sent_append(last);
        }
        assert!(pr.is_paused(3));
        assert!(pr.maybe_update(2));
        assert!(!pr.is_paused(3));
        assert_eq!(pr.next_index, 4);
    }

    #[test]
    fn probe_sends_one_at_a_time() {
        let mut pr = Progress::new(5);
        pr.sent_append(7);
        assert!(pr.is_paused(64));
        pr.on_heartbeat_answer(64);
        assert!(!pr.is_paused(64));
    }

    #[test]
    fn stale_rejection_is_ignored() {
        let mut pr = Progress::new(10);
        pr.match_index = 8;
        pr.become_replicate();
        assert!(!pr.maybe_back_off(7, 3), "rejection below match is stale");
        assert!(pr.maybe_back_off(9, 4));
        assert_eq!(pr.next_index, 9, "never below match + 1");
        assert_eq!(pr.state, ProgressState::Probe);
    }
}
