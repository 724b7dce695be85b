//! Sending a snapshot to a follower that needs compacted entries (§7), in chunks
//! that each fit one message, one at a time, resumable from the offset the
//! follower reports after a lost chunk, a leader change or a restart.

use super::membership::Membership;
use super::node::Raft;
use super::progress::ProgressState;
use super::types::*;

/// The largest snapshot a follower accepts; a bigger one is ignored rather than
/// allowed to exhaust memory.
pub(crate) const MAX_SNAPSHOT_BYTES: u64 = 64 << 20;

/// A snapshot a follower is receiving, chunk by chunk.
#[derive(Debug)]
pub(super) struct IncomingSnapshot {
    meta: SnapshotMeta,
    membership: Option<Membership>,
    total_len: u64,
    data: Vec<u8>,
}

impl Raft {
    /// Sends the chunk of our snapshot at the follower's acknowledged offset.
    pub(super) fn send_snapshot(&mut self, to: NodeId) -> bool {
        let snapshot = self.log.snapshot();
        let meta = snapshot.meta;
        let total_len = snapshot.data.len() as u64;
        let Some(pr) = self.progress.get_mut(&to) else {
            return false;
        };
        pr.become_snapshot(meta.index);
        let start = pr.snapshot_offset.min(total_len) as usize;
        // The configuration travels in the first chunk, which leaves it room.
        let membership = if start == 0 {
            snapshot.membership.clone()
        } else {
            None
        };
        let room = self
            .config
            .max_message_bytes
            .saturating_sub(MESSAGE_OVERHEAD_BYTES)
            .saturating_sub(membership.as_ref().map_or(0, Membership::wire_bound));
        let chunk_bytes = self.config.snapshot_chunk_bytes.min(room).max(1);
        let end = (start + chunk_bytes).min(total_len as usize);
        let chunk = snapshot.data[start..end].to_vec();
        let offset = start as u64;
        self.send(
            to,
            MessageBody::InstallSnapshot {
                meta,
                membership,
                offset,
                total_len,
                chunk,
            },
        );
        true
    }

    pub(super) fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        membership: Option<Membership>,
        offset: u64,
        total_len: u64,
        chunk: Vec<u8>,
    ) {
        self.follow(from);
        if meta.index <= self.log.committed() {
            // We already hold everything it covers.
            self.incoming_snapshot = None;
            self.answer_snapshot(from, meta.index, total_len, true);
            return;
        }
        if total_len > MAX_SNAPSHOT_BYTES || offset.saturating_add(chunk.len() as u64) > total_len {
            return;
        }
        let same = self
            .incoming_snapshot
            .as_ref()
            .is_some_and(|s| s.meta == meta && s.total_len == total_len);
        if !same {
            if offset != 0 {
                self.answer_snapshot(from, meta.index, 0, false);
                return;
            }
            self.incoming_snapshot = Some(IncomingSnapshot {
                meta,
                membership,
                total_len,
                data: Vec::new(),
            });
        }
        let incoming = self.incoming_snapshot.as_mut().expect("set above");
        let held = incoming.data.len() as u64;
        if offset != held {
            self.answer_snapshot(from, meta.index, held, false);
            return;
        }
        incoming.data.extend_from_slice(&chunk);
        let held = incoming.data.len() as u64;
        if held < total_len {
            self.answer_snapshot(from, meta.index, held, false);
            return;
        }
        let complete = self.incoming_snapshot.take().expect("set above");
        if !(self.config.snapshot_check)(&complete.data) {
            self.refuse_snapshot(from, meta);
            return;
        }
        self.install_snapshot(Snapshot {
            meta: complete.meta,
            membership: complete.membership,
            data: complete.data,
        });
        self.answer_snapshot(from, meta.index, total_len, true);
    }

    /// The state machine cannot read the assembled snapshot: nothing of it is
    /// kept, the log stays as it was, and the sender is told to start over (a
    /// real leader's next chunks can still bring a good one).
    fn refuse_snapshot(&mut self, from: NodeId, meta: SnapshotMeta) {
        self.snapshots_refused += 1;
        log::warn!(
            "node {} refused a snapshot at index {} term {} from node {from}: the state machine cannot decode it",
            self.id(),
            meta.index,
            meta.term
        );
        self.answer_snapshot(from, meta.index, 0, false);
    }

    /// §7: a snapshot whose last entry we hold with the same term only moves the
    /// commit index; otherwise it replaces the whole log.
    fn install_snapshot(&mut self, snapshot: Snapshot) {
        let meta = snapshot.meta;
        if self.log.matches(meta.index, meta.term) {
            self.log.commit_to(meta.index);
        } else {
            log::debug!(
                "node {} installs snapshot at index {} term {}",
                self.id(),
                meta.index,
                meta.term
            );
            self.log.restore(snapshot);
            self.refresh_membership();
        }
    }

    fn answer_snapshot(&mut self, to: NodeId, snapshot_index: u64, next_offset: u64, done: bool) {
        self.send(
            to,
            MessageBody::InstallSnapshotResponse {
                snapshot_index,
                next_offset,
                done,
            },
        );
    }

    pub(super) fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        snapshot_index: u64,
        next_offset: u64,
        done: bool,
    ) {
        let last_index = self.log.last_index();
        let Some(pr) = self.answered_by(from) else {
            return;
        };
        if done && snapshot_index > last_index {
            return; // more than we ever sent: a buggy or hostile answer
        }
        if done {
            pr.maybe_update(snapshot_index);
            if pr.state == ProgressState::Snapshot {
                pr.become_probe();
            }
            self.maybe_commit();
            self.send_append(from, true);
            return;
        }
        if pr.state != ProgressState::Snapshot || pr.snapshot_index != snapshot_index {
            return;
        }
        if next_offset > pr.snapshot_offset {
            pr.snapshot_offset = next_offset;
            self.send_snapshot(from);
        } else {
            // The follower is behind what we thought (a lost chunk, a restart): the
            // next heartbeat answer resends from its offset. Answering every such
            // reply at once would let duplicated messages echo forever.
            pr.snapshot_offset = next_offset;
        }
    }
}
