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
//!
//! [`NoteRequests`] here holds the waiting requests and makes every decision
//! about them, with no Raft, socket or clock of its own (unit-tested in
//! `tests.rs`): it hands back what to do ([`NoteAction`]: propose, send, ask
//! for a read index), the way the Raft core hands back `Ready`, and the node
//! logic (`event_loop.rs`) does it and says how a proposal went.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::shared::LoopCounters;
use crate::raft::{NodeId, ReadFailure, ReadState, Role};
use crate::table::{Command, MAX_NOTE_BYTES};
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
pub(crate) type NoteReply = Sender<NoteOutcome>;

/// What the note requests ask of the node.
#[derive(Debug, PartialEq)]
pub(crate) enum NoteAction {
    /// Propose `command` (this node leads); then tell
    /// [`NoteRequests::proposed`] how it went.
    Propose {
        proposal: Proposal,
        command: Command,
    },
    /// Send `datagram` to node `to`.
    Send { to: NodeId, datagram: Datagram },
    /// Start a read-index round with this context (`Raft::read_index`).
    ReadIndex(u64),
}

/// Whose write a [`NoteAction::Propose`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Proposal {
    /// This node's own write, by request id.
    Own(u64),
    /// A follower's write, forwarded here.
    Forwarded { from: NodeId, request: u64 },
}

/// What the note requests need to know of the node to decide.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NodeState {
    pub me: NodeId,
    pub role: Role,
    pub term: u64,
    pub leader: Option<NodeId>,
}

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

/// The bits of a request id below the node's id.
const REQUEST_COUNTER_MASK: u64 = (1 << 56) - 1;

/// The first request id of node `me` in a run seeded with `seed`.
fn request_start(me: NodeId, seed: u64) -> u64 {
    // splitmix64's finalizer: nearby seeds give unrelated values.
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((me & 0xFF) << 56) | (z >> 8)
}

/// How many recent forwarded requests a leader remembers, to propose each once
/// even if its datagram arrives twice (duplicates arrive within milliseconds).
const MAX_REMEMBERED_FORWARDS: usize = 4096;

/// The note requests of one node; owned by the event loop.
#[derive(Debug, Default)]
pub(crate) struct NoteRequests {
    /// Writes not in any log: they certainly did not happen yet and may be sent.
    unsent: VecDeque<Write>,
    /// Writes the leader refused, sent again from the next tick on: a follower
    /// a term behind learns the new one within a heartbeat, and resending at
    /// every round trip until then would only bounce.
    refused: Vec<Write>,
    /// Writes proposed here or forwarded to the leader, by request id.
    sent: BTreeMap<u64, Sent>,
    /// Own writes handed out in a `Propose` action, until `proposed` says how
    /// it went (within the same loop round).
    proposing: BTreeMap<u64, Write>,
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
    /// The request ids of node `me` start from `request_seed`, which must
    /// differ between runs of a node (a random number does). A write is known
    /// by its id when it is applied, so ids must never meet: the low 8 bits of
    /// the node's id on top keep most nodes apart (ids are hashes of names, so
    /// two may share them), and the seed, mixed, places each run at a random
    /// point of the other 2^56, where two runs' ranges of a few million writes
    /// meet with odds of about 2^-34 (seeds that differ by a little, as the
    /// simulator's do across restarts, land far apart).
    pub fn new(me: NodeId, request_seed: u64) -> NoteRequests {
        NoteRequests {
            next_request: request_start(me, request_seed),
            ..NoteRequests::default()
        }
    }

    pub(crate) fn add_write(&mut self, text: String, reply: NoteReply, deadline: Instant) {
        let request = self.next_request;
        // The low 56 bits count, wrapping within them: the node's id on top
        // stays.
        let node = self.next_request & !REQUEST_COUNTER_MASK;
        self.next_request = node | (self.next_request.wrapping_add(1) & REQUEST_COUNTER_MASK);
        self.unsent.push_back(Write {
            text,
            request,
            reply,
            deadline,
        });
    }

    pub(crate) fn add_read(&mut self, reply: NoteReply, deadline: Instant) {
        self.unasked.push(Read { reply, deadline });
    }

    /// Whether no request of any kind waits (the tick then has nothing to do).
    /// Empty read lists are removed as they empty, so the maps say it.
    pub fn is_empty(&self) -> bool {
        self.unsent.is_empty()
            && self.refused.is_empty()
            && self.proposing.is_empty()
            && self.sent.is_empty()
            && self.unasked.is_empty()
            && self.asked.is_empty()
            && self.ready.is_empty()
    }

    /// Answers every request whose deadline passed, saying what is known.
    fn expire(&mut self, now: Instant, metrics: &LoopCounters) {
        let due = |deadline: Instant| deadline <= now;
        let fail = |reply: &NoteReply, reason: &str| {
            LoopCounters::add(&metrics.note_unavailable);
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

    /// What to do now: every unsent write proposed (leader) or forwarded to
    /// the leader (follower; with no leader known they wait), and one
    /// read-index round for every read that arrived.
    pub(crate) fn start(&mut self, now: Instant, node: NodeState) -> Vec<NoteAction> {
        let mut actions = Vec::new();
        if node.role == Role::Leader {
            while let Some(write) = self.unsent.pop_front() {
                let command = Command::SetNote {
                    text: write.text.clone(),
                    request: write.request,
                };
                let proposal = Proposal::Own(write.request);
                self.proposing.insert(write.request, write);
                actions.push(NoteAction::Propose { proposal, command });
            }
        } else if let Some(leader) = node.leader {
            while let Some(write) = self.unsent.pop_front() {
                let datagram = Datagram::ProposeNote {
                    from: node.me,
                    term: node.term,
                    request: write.request,
                    text: write.text.clone(),
                };
                actions.push(NoteAction::Send {
                    to: leader,
                    datagram,
                });
                self.mark_sent(write, node.term, Some(leader));
            }
        }
        if let Some(ctx) = self.start_read_round(now) {
            actions.push(NoteAction::ReadIndex(ctx));
        }
        actions
    }

    /// How a `Propose` went: appended in `term`, or refused by the core (None:
    /// a leadership transfer is under way). A refused own write waits for the
    /// next round (for the successor); a refused forward is refused to the
    /// follower, which sends it again.
    pub(crate) fn proposed(
        &mut self,
        proposal: Proposal,
        term: Option<u64>,
        me: NodeId,
    ) -> Option<NoteAction> {
        match (proposal, term) {
            (Proposal::Own(request), _) => {
                let write = self.proposing.remove(&request)?;
                match term {
                    Some(term) => self.mark_sent(write, term, None),
                    None => self.unsent.push_back(write),
                }
                None
            }
            (Proposal::Forwarded { request, .. }, Some(_)) => {
                self.remember_forward(request);
                None
            }
            (Proposal::Forwarded { from, request }, None) => Some(NoteAction::Send {
                to: from,
                datagram: Datagram::NoteRefused { from: me, request },
            }),
        }
    }

    /// A follower forwarded a note write in its `term`: propose it if this
    /// node leads in that term (once, however many copies of the datagram
    /// arrive), else tell the follower it did not happen.
    pub(crate) fn forwarded(
        &mut self,
        node: NodeState,
        from: NodeId,
        term: u64,
        request: u64,
        text: String,
    ) -> Option<NoteAction> {
        if !self.first_forward(node.term, request) {
            return None; // a duplicated datagram: proposed once already
        }
        if node.role == Role::Leader && term == node.term && text.len() <= MAX_NOTE_BYTES {
            Some(NoteAction::Propose {
                proposal: Proposal::Forwarded { from, request },
                command: Command::SetNote { text, request },
            })
        } else {
            Some(NoteAction::Send {
                to: from,
                datagram: Datagram::NoteRefused {
                    from: node.me,
                    request,
                },
            })
        }
    }

    /// The next unsent write, taken out (the tests place it with `mark_sent`).
    #[cfg(test)]
    fn next_unsent(&mut self) -> Option<Write> {
        self.unsent.pop_front()
    }

    /// `write` is in a log (or on its way to the leader `to`) in `term`.
    fn mark_sent(&mut self, write: Write, term: u64, to: Option<NodeId>) {
        self.sent.insert(write.request, Sent { write, term, to });
    }

    /// Starts one read-index round for every read that arrived; returns its
    /// context for `Raft::read_index`, or None when no read waits.
    fn start_read_round(&mut self, now: Instant) -> Option<u64> {
        if self.unasked.is_empty() {
            return None;
        }
        self.last_read_ctx += 1;
        let reads = std::mem::take(&mut self.unasked);
        self.asked.insert(self.last_read_ctx, (now, reads));
        Some(self.last_read_ctx)
    }

    /// Once per tick: refused writes may be sent again, expired requests are
    /// answered, and reads whose index request may have been lost are asked again.
    pub fn tick(&mut self, now: Instant, metrics: &LoopCounters) {
        let refused = std::mem::take(&mut self.refused);
        self.unsent.extend(refused);
        self.expire(now, metrics);
        let stale: Vec<u64> = self
            .asked
            .iter()
            .filter(|(_, (asked_at, _))| {
                now.saturating_duration_since(*asked_at) >= READ_RETRY_AFTER
            })
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in stale {
            if let Some((_, reads)) = self.asked.remove(&ctx) {
                self.unasked.extend(reads);
            }
        }
    }

    /// As leader, whether to propose a follower's forwarded `request` now: not
    /// when a duplicated datagram already brought it in this term.
    fn first_forward(&mut self, term: u64, request: u64) -> bool {
        if self.forwards_term != term {
            self.forwards_term = term;
            self.forwarded_to_me.clear();
            self.forwarded_order.clear();
        }
        !self.forwarded_to_me.contains(&request)
    }

    /// As leader: the follower's `request` was proposed.
    fn remember_forward(&mut self, request: u64) {
        self.forwarded_to_me.insert(request);
        self.forwarded_order.push_back(request);
        if self.forwarded_order.len() > MAX_REMEMBERED_FORWARDS {
            let oldest = self.forwarded_order.pop_front().expect("not empty");
            self.forwarded_to_me.remove(&oldest);
        }
    }

    /// The leader `from` did not propose `request`: it certainly did not happen.
    /// Only the node it went to can say so.
    pub(crate) fn refused_by(&mut self, from: NodeId, request: u64) {
        if self.sent.get(&request).is_some_and(|s| s.to == Some(from)) {
            let sent = self.sent.remove(&request).expect("checked above");
            self.refused.push(sent.write);
        }
    }

    /// The core's read-index answers: a read is ready once its index is applied;
    /// a failed one (no leader, leadership lost) is asked again at the next tick.
    pub(crate) fn read_results(&mut self, states: &[ReadState], failures: &[ReadFailure]) {
        for state in states {
            if let Some((_, reads)) = self.asked.remove(&state.ctx) {
                self.ready.entry(state.index).or_default().extend(reads);
            }
        }
        for failure in failures {
            // Back-dated so that the retry is due at once.
            if let Some((asked_at, _)) = self.asked.get_mut(&failure.ctx) {
                *asked_at = asked_at.checked_sub(READ_RETRY_AFTER).unwrap_or(*asked_at);
            }
        }
    }

    /// This node applied `writes` (request id and index of every `SetNote`) up
    /// to an entry of `last_term`: answers its writes among them, and queues
    /// again the writes that can no longer commit (proposed in an earlier term
    /// and not applied by now).
    pub fn applied(
        &mut self,
        writes: &[(u64, u64)],
        last_term: Option<u64>,
        metrics: &LoopCounters,
    ) {
        for (request, index) in writes {
            if let Some(sent) = self.sent.remove(request) {
                LoopCounters::add(&metrics.note_writes);
                let _ = sent.write.reply.send(NoteOutcome::Saved { index: *index });
            }
        }
        let Some(last_term) = last_term else {
            return;
        };
        let lost: Vec<u64> = self
            .sent
            .iter()
            .filter(|(_, sent)| sent.term < last_term)
            .map(|(request, _)| *request)
            .collect();
        for request in lost {
            let sent = self.sent.remove(&request).expect("listed above");
            log::debug!("note write {request} lost to a leader change: sending again");
            self.unsent.push_back(sent.write);
        }
    }

    /// A snapshot from the leader replaced the log up to an entry of `term`:
    /// writes of that term or earlier may be inside it or not, and this node
    /// will never see them applied; nobody can tell. (Left waiting, a later
    /// term's entry would make them look lost and be sent a second time.)
    pub(crate) fn snapshot_installed(&mut self, term: u64, metrics: &LoopCounters) {
        let unknown: Vec<u64> = self
            .sent
            .iter()
            .filter(|(_, sent)| sent.term <= term)
            .map(|(request, _)| *request)
            .collect();
        for request in unknown {
            let sent = self.sent.remove(&request).expect("listed above");
            LoopCounters::add(&metrics.note_unavailable);
            let _ = sent.write.reply.send(NoteOutcome::Unavailable(
                "this node caught up from a snapshot; the write may or may not have happened"
                    .into(),
            ));
        }
    }

    /// Answers the reads whose index is at or below `applied`, with `note` (the
    /// note as applied up to there), called only when one is due.
    pub(crate) fn finish_reads(
        &mut self,
        applied: u64,
        note: impl FnOnce() -> String,
        metrics: &LoopCounters,
    ) {
        if self
            .ready
            .first_key_value()
            .is_none_or(|(i, _)| *i > applied)
        {
            return;
        }
        let text = note();
        while let Some(entry) = self.ready.first_entry() {
            if *entry.key() > applied {
                break;
            }
            for read in entry.remove() {
                LoopCounters::add(&metrics.note_reads);
                let _ = read.reply.send(NoteOutcome::Read {
                    text: text.clone(),
                    index: applied,
                });
            }
        }
    }
}
