//! Note writes and linearizable note reads, waiting on Raft inside the event loop.
//!
//! A **write** is answered only once its entry is committed and applied here.
//! The leader proposes it at once; a follower forwards it to the leader in a
//! `ProposeNote` datagram. The command carries a request id, so this node knows
//! its write when it applies it, whichever leader put it in the log. A write is
//! sent again only when it certainly did not happen:
//! - the leader refused it (`NoteRefused`: not the leader, or not in that term;
//!   sent again from the next tick on);
//! - or this node applied an entry of a later term than the one the write was
//!   proposed in, without applying the write: the committed log has its terms in
//!   order, so no entry of the earlier term can commit after that.
//!
//! Anything else waits until the deadline and ends as "may or may not have
//! happened", never as a second copy of the write.
//!
//! A **read** runs ReadIndex (Raft dissertation §6.4) through the core: the
//! leader confirms with a heartbeat round that it still leads and hands out its
//! commit index; the read is answered from this node's note once this node
//! applied that index. A follower asks the leader for the index and answers
//! itself, never from a copy it has not proven current. Reads that arrive in the
//! same loop round share one round. A read is idempotent, so a lost request or
//! answer is simply asked again.
//!
//! Every request carries a deadline; when it passes, the client gets 503 with
//! what is known of the outcome.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::event_loop::EventLoop;
use super::shared::Metrics;
use super::udp;
use crate::raft::{NodeId, ReadFailure, ReadState, Role};
use crate::table::Command;
use crate::wire::Datagram;

/// How long a note request may wait for Raft before the client gets 503: long
/// enough for an election or two (150-300 ms each), short enough for a person.
pub const NOTE_TIMEOUT: Duration = Duration::from_secs(3);

/// A read's index request (or its answer) may have been lost after this long;
/// then it is asked again.
const READ_RETRY_AFTER: Duration = Duration::from_millis(200);

/// What a note request came to; the HTTP thread turns it into a reply.
#[derive(Debug, PartialEq, Eq)]
pub enum NoteOutcome {
    /// The write is committed and applied here, at this log index.
    Saved { index: u64 },
    /// The note as of a read index at or below `index`, which this node applied.
    Read { text: String, index: u64 },
    /// No answer in time; the reason says what is known (for a write: whether it
    /// may have happened).
    Unavailable(String),
}

/// Where the event loop answers one note request.
pub type NoteReply = Sender<NoteOutcome>;

/// A note write waiting for Raft.
#[derive(Debug)]
struct Write {
    text: String,
    /// Names the write in its `SetNote` command.
    request: u64,
    reply: NoteReply,
    deadline: Instant,
}

/// A write in a leader's log, or forwarded to one.
#[derive(Debug)]
struct Sent {
    write: Write,
    /// The term it was (or may have been) proposed in.
    term: u64,
    /// The leader it was forwarded to; None when this node proposed it.
    to: Option<NodeId>,
}

/// A note read waiting for Raft.
#[derive(Debug)]
struct Read {
    reply: NoteReply,
    deadline: Instant,
}

/// How many recent forwarded requests a leader remembers, to propose each once
/// even if its datagram arrives twice (duplicates arrive within milliseconds).
const MAX_REMEMBERED_FORWARDS: usize = 4096;

/// The note requests of one node; owned by the event loop.
#[derive(Debug, Default)]
pub struct NoteRequests {
    /// Writes not in any log: they certainly did not happen yet and may be sent.
    unsent: VecDeque<Write>,
    /// Writes the leader refused, sent again from the next tick on: a follower
    /// a term behind learns the new one within a heartbeat, and resending at
    /// every round trip until then would only bounce.
    refused: Vec<Write>,
    /// Writes proposed here or forwarded to the leader, by request id.
    sent: BTreeMap<u64, Sent>,
    /// The next request id.
    next_request: u64,
    /// As leader: the followers' requests proposed lately in `forwards_term`
    /// (the set, and the order to forget them in).
    forwarded_to_me: BTreeSet<u64>,
    forwarded_order: VecDeque<u64>,
    forwards_term: u64,
    /// Reads to start in the next round.
    unasked: Vec<Read>,
    /// Reads whose read index was asked for, by the core's read context.
    asked: BTreeMap<u64, (Instant, Vec<Read>)>,
    /// Reads whose index the core gave, waiting until this node applied it.
    ready: BTreeMap<u64, Vec<Read>>,
    last_read_ctx: u64,
}

impl NoteRequests {
    /// `request_seed` starts the request ids: it must differ between nodes and
    /// between runs of a node (a random number does).
    pub fn new(request_seed: u64) -> NoteRequests {
        NoteRequests {
            next_request: request_seed,
            ..NoteRequests::default()
        }
    }

    pub fn add_write(&mut self, text: String, reply: NoteReply, deadline: Instant) {
        let request = self.next_request;
        self.next_request = self.next_request.wrapping_add(1);
        self.unsent.push_back(Write {
            text,
            request,
            reply,
            deadline,
        });
    }

    pub fn add_read(&mut self, reply: NoteReply, deadline: Instant) {
        self.unasked.push(Read { reply, deadline });
    }

    /// Requests waiting, of every kind (for tests and metrics).
    pub fn len(&self) -> usize {
        self.unsent.len()
            + self.refused.len()
            + self.sent.len()
            + self.unasked.len()
            + self.asked.values().map(|(_, r)| r.len()).sum::<usize>()
            + self.ready.values().map(Vec::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Answers every request whose deadline passed, saying what is known.
    fn expire(&mut self, now: Instant, metrics: &Metrics) {
        let due = |deadline: Instant| deadline <= now;
        let fail = |reply: &NoteReply, reason: &str| {
            Metrics::add(&metrics.note_unavailable);
            // The HTTP thread may have given up already; nothing to do then.
            let _ = reply.send(NoteOutcome::Unavailable(reason.to_string()));
        };
        let secs = NOTE_TIMEOUT.as_secs_f64();
        self.unsent.retain(|w| {
            let keep = !due(w.deadline);
            if !keep {
                fail(
                    &w.reply,
                    &format!(
                        "no leader could be reached within {secs} s; the note was not written"
                    ),
                );
            }
            keep
        });
        self.sent.retain(|_, sent| {
            let keep = !due(sent.write.deadline);
            if !keep {
                fail(&sent.write.reply, &format!("not confirmed within {secs} s (leader lost?); the write may or may not have happened"));
            }
            keep
        });
        let read_reason = format!("no quorum: leadership could not be confirmed within {secs} s");
        self.unasked.retain(|r| {
            let keep = !due(r.deadline);
            if !keep {
                fail(&r.reply, &read_reason);
            }
            keep
        });
        for (_, reads) in self.asked.values_mut() {
            reads.retain(|r| {
                let keep = !due(r.deadline);
                if !keep {
                    fail(&r.reply, &read_reason);
                }
                keep
            });
        }
        self.asked.retain(|_, (_, reads)| !reads.is_empty());
        for reads in self.ready.values_mut() {
            reads.retain(|r| {
                let keep = !due(r.deadline);
                if !keep {
                    fail(
                        &r.reply,
                        "the read index was not applied in time (this node is behind)",
                    );
                }
                keep
            });
        }
        self.ready.retain(|_, reads| !reads.is_empty());
    }
}

impl EventLoop {
    /// Sends what can be sent: unsent writes to the log (leader) or to the leader
    /// (follower), and one read-index round for every read that arrived.
    pub(super) fn start_note_requests(&mut self) {
        let term = self.raft.term();
        if self.raft.role() == Role::Leader {
            while let Some(write) = self.notes.unsent.pop_front() {
                let command = Command::SetNote {
                    text: write.text.clone(),
                    request: write.request,
                };
                match self.raft.propose(command.encode()) {
                    Ok((_, term)) => {
                        let sent = Sent {
                            write,
                            term,
                            to: None,
                        };
                        self.notes.sent.insert(sent.write.request, sent);
                    }
                    Err(e) => {
                        // Handing leadership over: wait for the successor.
                        log::debug!("note write waits: {e:?}");
                        self.notes.unsent.push_front(write);
                        break;
                    }
                }
            }
        } else if let Some(leader) = self.raft.leader() {
            while let Some(write) = self.notes.unsent.pop_front() {
                let datagram = Datagram::ProposeNote {
                    from: self.shared.me,
                    term,
                    request: write.request,
                    text: write.text.clone(),
                };
                udp::send(&self.socket, &self.shared, leader, &datagram);
                let sent = Sent {
                    write,
                    term,
                    to: Some(leader),
                };
                self.notes.sent.insert(sent.write.request, sent);
            }
        }
        if !self.notes.unasked.is_empty() {
            self.notes.last_read_ctx += 1;
            let ctx = self.notes.last_read_ctx;
            let reads = std::mem::take(&mut self.notes.unasked);
            self.notes.asked.insert(ctx, (Instant::now(), reads));
            self.raft.read_index(ctx);
        }
    }

    /// Once per tick: answers expired requests, asks again for read indexes that
    /// may have been lost.
    pub(super) fn tick_note_requests(&mut self, now: Instant) {
        if self.notes.is_empty() {
            return;
        }
        let refused = std::mem::take(&mut self.notes.refused);
        self.notes.unsent.extend(refused);
        self.notes.expire(now, &self.shared.metrics);
        let stale: Vec<u64> = self
            .notes
            .asked
            .iter()
            .filter(|(_, (asked_at, _))| {
                now.saturating_duration_since(*asked_at) >= READ_RETRY_AFTER
            })
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in stale {
            if let Some((_, reads)) = self.notes.asked.remove(&ctx) {
                self.notes.unasked.extend(reads);
            }
        }
    }

    /// A follower forwarded a note write: propose it if this node leads in the
    /// term the follower named, else tell it the write did not happen.
    pub(super) fn on_propose_note(&mut self, from: NodeId, term: u64, request: u64, text: String) {
        let notes = &mut self.notes;
        if notes.forwards_term != self.raft.term() {
            notes.forwards_term = self.raft.term();
            notes.forwarded_to_me.clear();
            notes.forwarded_order.clear();
        }
        if notes.forwarded_to_me.contains(&request) {
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
            notes.forwarded_to_me.insert(request);
            notes.forwarded_order.push_back(request);
            if notes.forwarded_order.len() > MAX_REMEMBERED_FORWARDS {
                let oldest = notes.forwarded_order.pop_front().expect("not empty");
                notes.forwarded_to_me.remove(&oldest);
            }
        } else {
            let datagram = Datagram::NoteRefused {
                from: self.shared.me,
                request,
            };
            udp::send(&self.socket, &self.shared, from, &datagram);
        }
    }

    /// The leader a write was forwarded to did not propose it.
    pub(super) fn on_note_refused(&mut self, from: NodeId, request: u64) {
        let refused_by_its_leader = self
            .notes
            .sent
            .get(&request)
            .is_some_and(|sent| sent.to == Some(from));
        if refused_by_its_leader {
            let sent = self.notes.sent.remove(&request).expect("checked above");
            self.notes.refused.push(sent.write);
        }
    }

    /// The core's read-index answers of the last `Ready`.
    pub(super) fn on_read_results(&mut self, states: &[ReadState], failures: &[ReadFailure]) {
        for state in states {
            if let Some((_, reads)) = self.notes.asked.remove(&state.ctx) {
                self.notes
                    .ready
                    .entry(state.index)
                    .or_default()
                    .extend(reads);
            }
        }
        for failure in failures {
            // No leader right now, or it lost leadership: ask again next tick,
            // until the deadline (back-dated so the retry is due at once).
            if let Some((asked_at, _)) = self.notes.asked.get_mut(&failure.ctx) {
                *asked_at = asked_at.checked_sub(READ_RETRY_AFTER).unwrap_or(*asked_at);
            }
        }
        self.finish_applied_reads();
    }

    /// After applying `writes` (request id and index of every `SetNote`
    /// applied) up to an entry of `last_term`: answers the writes and reads this
    /// node has now applied, and sends again the writes that can no longer commit.
    pub(super) fn finish_applied_notes(&mut self, writes: &[(u64, u64)], last_term: Option<u64>) {
        for (request, index) in writes {
            if let Some(sent) = self.notes.sent.remove(request) {
                Metrics::add(&self.shared.metrics.note_writes);
                let _ = sent.write.reply.send(NoteOutcome::Saved { index: *index });
            }
        }
        if let Some(last_term) = last_term {
            let lost: Vec<u64> = self
                .notes
                .sent
                .iter()
                .filter(|(_, sent)| sent.term < last_term)
                .map(|(request, _)| *request)
                .collect();
            for request in lost {
                let sent = self.notes.sent.remove(&request).expect("listed above");
                log::debug!("note write {request} lost to a leader change: sending again");
                self.notes.unsent.push_back(sent.write);
            }
        }
        self.finish_applied_reads();
    }

    /// A snapshot from the leader replaced the log up to an entry of `term`:
    /// writes of that term or earlier may be inside it or not, and this node
    /// will never see them applied; nobody can tell. (Left waiting, a later
    /// term's entry would make them look lost and be sent a second time.)
    pub(super) fn on_snapshot_installed(&mut self, term: u64) {
        let unknown: Vec<u64> = self
            .notes
            .sent
            .iter()
            .filter(|(_, sent)| sent.term <= term)
            .map(|(request, _)| *request)
            .collect();
        for request in unknown {
            let sent = self.notes.sent.remove(&request).expect("listed above");
            Metrics::add(&self.shared.metrics.note_unavailable);
            let _ = sent.write.reply.send(NoteOutcome::Unavailable(
                "this node caught up from a snapshot; the write may or may not have happened"
                    .into(),
            ));
        }
    }

    fn finish_applied_reads(&mut self) {
        let applied = self.raft.applied_index();
        if self
            .notes
            .ready
            .first_key_value()
            .is_none_or(|(i, _)| *i > applied)
        {
            return;
        }
        let text = self.shared.table().note().to_string();
        while let Some(entry) = self.notes.ready.first_entry() {
            if *entry.key() > applied {
                break;
            }
            for read in entry.remove() {
                Metrics::add(&self.shared.metrics.note_reads);
                let _ = read.reply.send(NoteOutcome::Read {
                    text: text.clone(),
                    index: applied,
                });
            }
        }
    }
}
