//! The node logic's side of the note requests: proposing, forwarding and
//! answering forwards through the core and the outbox. The decisions are
//! [`NoteRequests`](super::NoteRequests)'s.

use std::time::Instant;

use super::super::event_loop::NodeLogic;
use crate::raft::{NodeId, ReadFailure, ReadState, Role};
use crate::storage::Dir;
use crate::table::Command;
use crate::wire::Datagram;

impl<D: Dir> NodeLogic<D> {
    /// Sends what can be sent: unsent writes to the log (leader) or to the leader
    /// (follower), and one read-index round for every read that arrived.
    pub(in crate::runtime) fn start_note_requests(&mut self, now: Instant) {
        if self.raft.role() == Role::Leader {
            while let Some(write) = self.notes.next_unsent() {
                let command = Command::SetNote {
                    text: write.text.clone(),
                    request: write.request,
                };
                match self.raft.propose(command.encode()) {
                    Ok((_, term)) => self.notes.mark_sent(write, term, None),
                    Err(e) => {
                        // Handing leadership over: wait for the successor.
                        log::debug!("note write waits: {e:?}");
                        self.notes.put_back(write);
                        break;
                    }
                }
            }
        } else if let Some(leader) = self.raft.leader() {
            let term = self.raft.term();
            while let Some(write) = self.notes.next_unsent() {
                let datagram = Datagram::ProposeNote {
                    from: self.shared.me,
                    term,
                    request: write.request,
                    text: write.text.clone(),
                };
                self.send(leader, datagram);
                self.notes.mark_sent(write, term, Some(leader));
            }
        }
        if let Some(ctx) = self.notes.start_read_round(now) {
            self.raft.read_index(ctx);
        }
    }

    pub(in crate::runtime) fn tick_note_requests(&mut self, now: Instant) {
        if !self.notes.is_empty() {
            self.notes.tick(now, &self.shared.counters);
        }
    }

    /// A follower forwarded a note write: propose it if this node leads in the
    /// term the follower named, else tell it the write did not happen.
    pub(in crate::runtime) fn on_propose_note(
        &mut self,
        from: NodeId,
        term: u64,
        request: u64,
        text: String,
    ) {
        if !self.notes.first_forward(self.raft.term(), request) {
            return; // a duplicated datagram: proposed once already
        }
        let proposed = self.raft.role() == Role::Leader
            && term == self.raft.term()
            && text.len() <= crate::table::MAX_NOTE_BYTES
            && self
                .raft
                .propose(Command::SetNote { text, request }.encode())
                .is_ok();
        if proposed {
            self.notes.remember_forward(request);
        } else {
            let datagram = Datagram::NoteRefused {
                from: self.shared.me,
                request,
            };
            self.send(from, datagram);
        }
    }

    pub(in crate::runtime) fn on_note_refused(&mut self, from: NodeId, request: u64) {
        self.notes.refused_by(from, request);
    }

    /// After a `Ready` was applied: its note writes, its read results, and the
    /// reads now applied.
    pub(in crate::runtime) fn finish_note_requests(
        &mut self,
        writes: &[(u64, u64)],
        last_term: Option<u64>,
        states: &[ReadState],
        failures: &[ReadFailure],
    ) {
        let metrics = &self.shared.counters;
        self.notes.applied(writes, last_term, metrics);
        self.notes.read_results(states, failures);
        let shared = &self.shared;
        self.notes.finish_reads(
            self.raft.applied_index(),
            || shared.table().note().to_string(),
            metrics,
        );
    }

    pub(in crate::runtime) fn on_snapshot_installed(&mut self, term: u64) {
        self.notes.snapshot_installed(term, &self.shared.counters);
    }
}
