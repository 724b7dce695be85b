//! The in-memory Raft log: the latest snapshot, the entries after it, and the
//! indexes that say how far they are committed, applied and persisted.
//!
//! Index bookkeeping, all of which `check_invariants` asserts:
//! `snapshot.index <= applied <= committed <= last_index` and
//! `persisted <= last_index`. Entries `unstable_from..=last_index` have not yet
//! been handed to the caller for persistence.

use super::membership::Membership;
use super::types::{Entry, EntryKind, Snapshot, SnapshotMeta};

/// The log of one node.
#[derive(Debug)]
pub struct RaftLog {
    /// Everything up to `snapshot.meta.index` lives only in this snapshot.
    snapshot: Snapshot,
    /// Entries `snapshot.meta.index + 1 ..= last_index`, contiguous.
    entries: Vec<Entry>,
    /// The highest index known to be committed (on a majority, §5.3).
    committed: u64,
    /// The highest index handed to the caller to apply.
    applied: u64,
    /// Bytes of command data in the applied entries after the snapshot, kept as
    /// they are handed out and compacted, so the snapshot threshold costs no scan
    /// of the log on every round.
    applied_bytes: u64,
    /// The highest index the caller confirmed durable (`Raft::advance`). A leader
    /// counts itself toward a majority only up to here.
    persisted: u64,
    /// The first index not yet handed to the caller to persist.
    unstable_from: u64,
    /// The last index of the `Ready` handed out and not yet confirmed.
    in_progress_to: u64,
    /// A snapshot received from the leader, not yet handed to the caller.
    snapshot_unstable: bool,
}

impl RaftLog {
    /// A log restored from what storage kept: `entries` follow `snapshot`.
    pub(crate) fn restore_from(snapshot: Snapshot, entries: Vec<Entry>, committed: u64) -> RaftLog {
        let last = snapshot.meta.index + entries.len() as u64;
        let first_ok = entries
            .first()
            .is_none_or(|e| e.index == snapshot.meta.index + 1);
        assert!(first_ok, "restored entries must follow the snapshot");
        let committed = committed.clamp(snapshot.meta.index, last);
        RaftLog {
            applied: snapshot.meta.index,
            applied_bytes: 0,
            persisted: last,
            unstable_from: last + 1,
            in_progress_to: last,
            snapshot_unstable: false,
            snapshot,
            entries,
            committed,
        }
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn snapshot_meta(&self) -> SnapshotMeta {
        self.snapshot.meta
    }

    /// The first index still held as an entry.
    pub fn first_index(&self) -> u64 {
        self.snapshot.meta.index + 1
    }

    pub fn last_index(&self) -> u64 {
        self.snapshot.meta.index + self.entries.len() as u64
    }

    pub(crate) fn last_term(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot.meta.term, |e| e.term)
    }

    pub fn committed(&self) -> u64 {
        self.committed
    }

    pub fn applied(&self) -> u64 {
        self.applied
    }

    pub(crate) fn persisted(&self) -> u64 {
        self.persisted
    }

    /// The term of the entry at `index`: known for the snapshot's last index and
    /// the entries after it, None for compacted or missing indexes (0 is term 0).
    pub fn term(&self, index: u64) -> Option<u64> {
        let snap = self.snapshot.meta;
        if index == snap.index {
            return Some(snap.term);
        }
        if index < snap.index || index > self.last_index() {
            return None;
        }
        Some(self.entries[(index - snap.index - 1) as usize].term)
    }

    pub fn entry(&self, index: u64) -> Option<&Entry> {
        if index <= self.snapshot.meta.index || index > self.last_index() {
            return None;
        }
        Some(&self.entries[(index - self.snapshot.meta.index - 1) as usize])
    }

    pub fn matches(&self, index: u64, term: u64) -> bool {
        self.term(index) == Some(term)
    }

    /// §5.4.1: a candidate's log is at least as up-to-date as ours.
    pub(crate) fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// The first index of the run of entries with the same term as `index`, for the
    /// fast-backtracking hint a follower sends with a rejection.
    pub(crate) fn first_index_of_term_at(&self, index: u64) -> u64 {
        let Some(term) = self.term(index) else {
            return index;
        };
        let mut i = index;
        while i > self.first_index() && self.term(i - 1) == Some(term) {
            i -= 1;
        }
        i
    }

    /// The last index at or below `upto` whose entry has `term`, if any: where a
    /// leader resumes after a rejection naming a term it also has.
    pub(crate) fn last_index_of_term(&self, term: u64, upto: u64) -> Option<u64> {
        let mut i = upto.min(self.last_index());
        loop {
            match self.term(i) {
                Some(t) if t == term => return Some(i),
                Some(t) if t < term => return None,
                Some(_) if i > self.snapshot.meta.index => i -= 1,
                _ => return None,
            }
        }
    }

    /// A leader appends its own entries (indexes must follow the last one).
    pub fn append(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            assert_eq!(
                entry.index,
                self.last_index() + 1,
                "leader appends must be contiguous"
            );
            self.entries.push(entry);
        }
    }

    /// §5.3 receiver rule: entries that follow a matching `prev_index`. Existing
    /// entries that agree are kept (a stale or duplicated append changes nothing);
    /// from the first conflict on, ours are replaced. Returns the index of the last
    /// entry of the append, which the follower now holds in agreement with the leader.
    pub(crate) fn append_after(&mut self, prev_index: u64, entries: Vec<Entry>) -> u64 {
        let last_new = prev_index + entries.len() as u64;
        let conflict = entries
            .iter()
            .position(|e| e.index > self.snapshot.meta.index && !self.matches(e.index, e.term));
        if let Some(at) = conflict {
            let first_conflict = entries[at].index;
            if first_conflict <= self.last_index() {
                assert!(
                    first_conflict > self.committed,
                    "a committed entry conflicts"
                );
                self.truncate_from(first_conflict);
            }
            let new: Vec<Entry> = entries.into_iter().skip(at).collect();
            self.append(new);
        }
        last_new
    }

    /// Drops entries from `index` on (a conflicting suffix).
    fn truncate_from(&mut self, index: u64) {
        let keep = (index - self.snapshot.meta.index - 1) as usize;
        self.entries.truncate(keep);
        self.unstable_from = self.unstable_from.min(index);
        self.persisted = self.persisted.min(index - 1);
        self.in_progress_to = self.in_progress_to.min(index - 1);
    }

    /// Entries from `from` on, as many as fit `max_bytes` (always at least one, so
    /// replication makes progress; every entry fits one message on its own).
    pub(crate) fn entries_from(&self, from: u64, max_bytes: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut index = from.max(self.first_index());
        while let Some(entry) = self.entry(index) {
            bytes += entry.size_bound();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
            index += 1;
        }
        out
    }

    pub(crate) fn commit_to(&mut self, index: u64) {
        let index = index.min(self.last_index());
        if index > self.committed {
            self.committed = index;
        }
    }

    /// A snapshot from the leader replaces the whole log (§7); it is handed to the
    /// caller in the next `Ready`.
    pub fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        self.entries.clear();
        self.snapshot = snapshot;
        self.committed = index;
        self.applied = index;
        self.applied_bytes = 0;
        self.persisted = self.persisted.min(index);
        self.unstable_from = index + 1;
        self.in_progress_to = self.in_progress_to.min(index);
        self.snapshot_unstable = true;
    }

    /// Replaces entries up to `index` (already applied) with the state machine's
    /// snapshot `data` taken at that index.
    pub fn compact(
        &mut self,
        index: u64,
        membership: Option<Membership>,
        data: Vec<u8>,
    ) -> Option<Snapshot> {
        if index <= self.snapshot.meta.index || index > self.applied || index > self.persisted {
            return None;
        }
        let term = self
            .term(index)
            .expect("an applied index above the snapshot is in the log");
        let drop = (index - self.snapshot.meta.index) as usize;
        let dropped: u64 = self.entries.drain(..drop).map(|e| data_len(&e)).sum();
        self.applied_bytes -= dropped;
        self.snapshot = Snapshot {
            meta: SnapshotMeta { index, term },
            membership,
            data,
        };
        Some(self.snapshot.clone())
    }

    /// The configuration in force at `index` (at or after the snapshot): the
    /// last `Config` entry up to it, else the snapshot's (None: bootstrap). An
    /// entry that does not decode is skipped, as `Raft` does.
    pub(crate) fn membership_at(&self, index: u64) -> Option<Membership> {
        let first = self.first_index();
        (first..=index.min(self.last_index()))
            .rev()
            .filter_map(|i| self.entry(i))
            .filter(|e| e.kind == EntryKind::Config)
            .find_map(|e| Membership::decode(&e.data).ok())
            .or_else(|| self.snapshot.membership.clone())
    }

    /// How many applied entries sit in the log after the snapshot.
    pub(crate) fn applied_since_snapshot(&self) -> u64 {
        self.applied - self.snapshot.meta.index
    }

    /// How many bytes of command data the applied entries after the snapshot
    /// hold: a few large entries weigh on memory as much as many small ones.
    pub(crate) fn applied_bytes_since_snapshot(&self) -> u64 {
        self.applied_bytes
    }

    pub(crate) fn has_unstable(&self) -> bool {
        self.snapshot_unstable || self.unstable_from <= self.last_index()
    }

    pub(crate) fn has_committed_to_apply(&self) -> bool {
        self.committed > self.applied
    }

    /// Hands out what must be persisted: the received snapshot (if any) and the
    /// entries not yet handed out.
    pub(crate) fn take_unstable(&mut self) -> (Option<Snapshot>, Vec<Entry>) {
        let snapshot = self.snapshot_unstable.then(|| self.snapshot.clone());
        self.snapshot_unstable = false;
        let entries = if self.unstable_from <= self.last_index() {
            let start = (self.unstable_from - self.snapshot.meta.index - 1) as usize;
            self.entries[start..].to_vec()
        } else {
            Vec::new()
        };
        self.unstable_from = self.last_index() + 1;
        self.in_progress_to = self.last_index();
        (snapshot, entries)
    }

    /// Hands out the committed entries not yet applied.
    pub(crate) fn take_committed(&mut self) -> Vec<Entry> {
        let from = self.applied + 1;
        let to = self.committed;
        let out: Vec<Entry> = (from..=to).filter_map(|i| self.entry(i).cloned()).collect();
        debug_assert_eq!(out.len() as u64, to.saturating_sub(self.applied));
        self.applied = to;
        self.applied_bytes += out.iter().map(data_len).sum::<u64>();
        out
    }

    /// The caller made the last handed-out `Ready` durable.
    pub(crate) fn mark_persisted(&mut self) {
        self.persisted = self.persisted.max(self.in_progress_to);
    }

    pub(crate) fn check_invariants(&self) {
        let snap = self.snapshot.meta.index;
        assert!(
            snap <= self.applied,
            "snapshot {snap} beyond applied {}",
            self.applied
        );
        assert!(self.applied <= self.committed, "applied beyond committed");
        assert!(
            self.committed <= self.last_index(),
            "committed beyond the log"
        );
        assert!(
            self.persisted <= self.last_index(),
            "persisted beyond the log"
        );
        if let Some(first) = self.entries.first() {
            assert_eq!(first.index, snap + 1, "entries must follow the snapshot");
        }
        let applied_entries = &self.entries[..(self.applied - snap) as usize];
        assert_eq!(
            self.applied_bytes,
            applied_entries.iter().map(data_len).sum::<u64>(),
            "applied bytes out of step with the applied entries"
        );
    }
}

fn data_len(entry: &Entry) -> u64 {
    entry.data.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::EntryKind;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Command,
            data: vec![index as u8],
        }
    }

    fn log_with_terms(terms: &[u64]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, &t)| entry(i as u64 + 1, t))
            .collect();
        RaftLog::restore_from(Snapshot::default(), entries, 0)
    }

    #[test]
    fn applied_bytes_count_only_applied_entries_after_the_snapshot() {
        let sized = |index: u64, len: usize| Entry {
            data: vec![0; len],
            ..entry(index, 1)
        };
        let entries = vec![sized(1, 10), sized(2, 200), sized(3, 3000)];
        let mut log = RaftLog::restore_from(Snapshot::default(), entries, 0);
        assert_eq!(log.applied_bytes_since_snapshot(), 0);
        log.commit_to(2);
        log.take_committed();
        assert_eq!(
            log.applied_bytes_since_snapshot(),
            210,
            "entry 3 is not applied"
        );
        log.mark_persisted();
        log.compact(1, None, Vec::new())
            .expect("entry 1 is applied");
        assert_eq!(log.applied_bytes_since_snapshot(), 200);
    }

    #[test]
    fn duplicate_append_keeps_a_longer_log() {
        let mut log = log_with_terms(&[1, 1, 1, 1]);
        let last = log.append_after(1, vec![entry(2, 1)]);
        assert_eq!(last, 2);
        assert_eq!(
            log.last_index(),
            4,
            "a stale append must not cut matching entries"
        );
    }

    #[test]
    fn conflicting_suffix_is_replaced() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        log.append_after(2, vec![entry(3, 3)]);
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.term(3), Some(3));
    }

    #[test]
    fn hints_find_term_boundaries() {
        let log = log_with_terms(&[1, 1, 2, 2, 2, 4]);
        assert_eq!(log.first_index_of_term_at(5), 3);
        assert_eq!(log.last_index_of_term(2, 6), Some(5));
        assert_eq!(log.last_index_of_term(3, 6), None);
    }

    #[test]
    fn batches_respect_the_byte_budget() {
        let log = log_with_terms(&[1; 10]);
        let one = entry(1, 1).size_bound();
        assert_eq!(log.entries_from(1, one * 3).len(), 3);
        assert_eq!(
            log.entries_from(1, 1).len(),
            1,
            "at least one entry is sent"
        );
    }

    #[test]
    fn compaction_keeps_the_tail() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        log.commit_to(3);
        log.take_committed();
        let snap = log.compact(3, None, vec![9]).unwrap();
        assert_eq!(snap.meta, SnapshotMeta { index: 3, term: 2 });
        assert_eq!(log.first_index(), 4);
        assert_eq!(log.term(3), Some(2));
        assert_eq!(log.term(2), None);
        log.check_invariants();
    }
}
