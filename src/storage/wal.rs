//! [`Storage`]: the write side of the data dir (append, hard state, group-commit
//! sync, snapshot install) and `open`, which rebuilds it from what recovery found.
//!
//! Storage keeps the log after the snapshot in memory as well as on disk: a
//! snapshot install rewrites the log from it, and the §7 term check needs the
//! entry at the snapshot's index. Snapshots keep it small.

use super::record::{self, MAX_ENTRY_DATA_BYTES};
use super::recover::{self, entries_after_snapshot};
use super::{io_error, snapshot_file, Dir, StorageError};
use super::{LOG_NAME, LOG_TEMP_NAME, MAX_LOG_FILE_BYTES, MAX_SNAPSHOT_DATA_BYTES};
use crate::raft::{Entry, HardState, RestoredState, Snapshot, SnapshotMeta};

/// The durable state of one Raft node.
#[derive(Debug)]
pub struct Storage<D: Dir> {
    dir: D,
    hard_state: HardState,
    snapshot_meta: Option<SnapshotMeta>,
    /// The log after the snapshot: `entries[0].index` is the snapshot's index + 1.
    entries: Vec<Entry>,
    /// The log file's length, to keep it under [`MAX_LOG_FILE_BYTES`].
    log_len: u64,
    /// Records were appended since the last fsync of the log.
    unsynced: bool,
    /// A write or fsync failed: what reached the disk is unknown (and after a
    /// failed fsync Linux may have dropped the dirty pages), so the only safe way
    /// on is to reopen and let recovery read what is really there.
    failed: bool,
    /// Reused for encoding, so a round's records cost no allocation.
    buf: Vec<u8>,
}

impl<D: Dir> Storage<D> {
    /// Opens the data dir, recovering from any crash, and returns what it holds.
    pub fn open(mut dir: D) -> Result<(Storage<D>, RestoredState), StorageError> {
        let found = recover::read_dir(&mut dir)?;
        let meta = found.snapshot.as_ref().map(|s| s.meta);
        let (entries, dropped) = entries_after_snapshot(found.entries, meta.unwrap_or_default())
            .map_err(|gap| StorageError::Corrupt {
                file: LOG_NAME.to_string(),
                offset: found.first_entry_offset,
                reason: gap.to_string(),
            })?;
        let mut hard_state = found.hard_state;
        hard_state.commit = hard_state.commit.max(meta.map_or(0, |m| m.index));
        let mut storage = Storage {
            dir,
            hard_state,
            snapshot_meta: meta,
            entries,
            log_len: found.log_len.unwrap_or(0),
            unsynced: false,
            failed: false,
            buf: Vec::new(),
        };
        if dropped || found.log_len.is_none() {
            // The file must start right after the snapshot too: were the dropped
            // entries left in it, replaying a later append on top of them would
            // bring back the conflict they were dropped for.
            storage.rewrite_log()?;
        } else {
            storage.sync_what_was_read(meta.map(|m| m.index))?;
        }
        let recovered = RestoredState {
            hard_state,
            snapshot: found.snapshot,
            entries: storage.entries.clone(),
        };
        Ok((storage, recovered))
    }

    /// Writes `entries` (consecutive indexes). When the first index is at or below
    /// the last stored one, the stored suffix from there is replaced. Durable only
    /// after [`sync`](Self::sync).
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.usable()?;
        let result = self.append_records(entries);
        self.note_failure(result)
    }

    /// Writes the hard state if it changed. Durable only after [`sync`](Self::sync).
    pub fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.usable()?;
        if hard_state == self.hard_state {
            return Ok(());
        }
        if hard_state.vote == Some(0) {
            return Err(StorageError::Invalid(
                "a vote for node 0: node ids start at 1".to_string(),
            ));
        }
        self.buf.clear();
        record::encode_hard_state(&hard_state, &mut self.buf);
        let result = self.write_buf();
        self.note_failure(result)?;
        self.hard_state = hard_state;
        Ok(())
    }

    /// Makes everything written since the last sync durable, with one fsync (none
    /// when nothing was written).
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.usable()?;
        if !self.unsynced {
            return Ok(());
        }
        let result = self
            .dir
            .sync_file(LOG_NAME)
            .map_err(io_error("syncing log"));
        self.note_failure(result)?;
        self.unsynced = false;
        Ok(())
    }

    /// Installs `snapshot` durably and drops the log entries it replaces: a local
    /// compaction or a snapshot from the leader. Entries after the snapshot stay
    /// only if the stored entry at its index has its term (§7). Everything written
    /// before is durable when this returns.
    pub fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.usable()?;
        let current = self.snapshot_index();
        if snapshot.meta.index <= current {
            return Err(StorageError::Invalid(format!(
                "snapshot at entry {} is not newer than the stored one at {current}",
                snapshot.meta.index
            )));
        }
        let len = snapshot.data.len() as u64;
        if len > MAX_SNAPSHOT_DATA_BYTES {
            return Err(StorageError::Invalid(format!(
                "snapshot of {len} bytes exceeds the {MAX_SNAPSHOT_DATA_BYTES}-byte limit"
            )));
        }
        let result = self.install_snapshot(snapshot);
        self.note_failure(result)
    }

    /// The index of the last entry, or of the snapshot when no entry follows it.
    pub fn last_index(&self) -> u64 {
        self.snapshot_index() + self.entries.len() as u64
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    pub fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.snapshot_meta
    }

    /// How many entries follow the snapshot (to check compaction in tests).
    #[cfg(test)]
    pub(crate) fn stored_entry_count(&self) -> usize {
        self.entries.len()
    }

    fn snapshot_index(&self) -> u64 {
        self.snapshot_meta.map_or(0, |m| m.index)
    }

    fn usable(&self) -> Result<(), StorageError> {
        if self.failed {
            return Err(StorageError::Invalid(
                "an earlier write failed; reopen the data dir to recover".to_string(),
            ));
        }
        Ok(())
    }

    /// Remembers an I/O failure so no later call builds on an unknown disk state.
    fn note_failure<T>(&mut self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        if matches!(result, Err(StorageError::Io { .. })) {
            self.failed = true;
        }
        result
    }

    fn append_records(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        self.check_append(entries)?;
        self.buf.clear();
        for entry in entries {
            record::encode_entry(entry, &mut self.buf);
        }
        self.write_buf()?;
        let keep = first.index - self.snapshot_index() - 1;
        self.entries.truncate(keep as usize);
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    /// Refuses an append that would break the log's shape, before any write.
    fn check_append(&self, entries: &[Entry]) -> Result<(), StorageError> {
        let invalid = |message: String| Err(StorageError::Invalid(message));
        let first = entries[0].index;
        let (snapshot, last) = (self.snapshot_index(), self.last_index());
        if first <= snapshot {
            return invalid(format!(
                "append at entry {first} is covered by the snapshot at {snapshot}"
            ));
        }
        if first > last + 1 {
            return invalid(format!(
                "append at entry {first} would leave a gap after the last entry {last}"
            ));
        }
        if let Some(pair) = entries.windows(2).find(|p| p[1].index != p[0].index + 1) {
            let (a, b) = (pair[0].index, pair[1].index);
            return invalid(format!(
                "entries to append are not consecutive ({a} then {b})"
            ));
        }
        if let Some(e) = entries.iter().find(|e| e.data.len() > MAX_ENTRY_DATA_BYTES) {
            let (index, len) = (e.index, e.data.len());
            return invalid(format!(
                "entry {index} has {len} bytes of data, over the {MAX_ENTRY_DATA_BYTES}-byte limit"
            ));
        }
        Ok(())
    }

    /// Appends the encoded records in `buf` to the log.
    fn write_buf(&mut self) -> Result<(), StorageError> {
        let new_len = self.log_len + self.buf.len() as u64;
        if new_len > MAX_LOG_FILE_BYTES {
            return Err(StorageError::Invalid(format!(
                "the log would grow past {MAX_LOG_FILE_BYTES} bytes; compact it with a snapshot"
            )));
        }
        self.dir
            .append(LOG_NAME, &self.buf)
            .map_err(io_error("appending to log"))?;
        self.log_len = new_len;
        self.unsynced = true;
        Ok(())
    }

    /// The steps of [`apply_snapshot`](Self::apply_snapshot), in the order that
    /// keeps every crash point recoverable: the snapshot is durable under its name
    /// before the log loses the entries it covers, and older snapshots go last.
    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let name = snapshot_file::name(snapshot.meta.index);
        let bytes = snapshot_file::encode(snapshot);
        write_durably(&mut self.dir, snapshot_file::TEMP_NAME, &name, &bytes)?;
        let entries = std::mem::take(&mut self.entries);
        let (kept, _) = entries_after_snapshot(entries, snapshot.meta)
            .expect("stored entries start right after the stored snapshot, below the new one");
        self.entries = kept;
        self.snapshot_meta = Some(snapshot.meta);
        self.rewrite_log()?;
        let names = self.dir.list().map_err(io_error("listing the data dir"))?;
        for old in names.iter().filter(|n| {
            snapshot_file::parse_name(n).is_some_and(|index| index < snapshot.meta.index)
        }) {
            self.dir
                .remove(old)
                .map_err(io_error(format!("removing the replaced {old}")))?;
        }
        Ok(())
    }

    /// Makes durable what `open` just read, before the node acts on it.
    ///
    /// What `open` reads comes from the page cache, which may hold bytes the disk
    /// never got: after a failed fsync (the node exits on one) Linux may drop the
    /// dirty pages' error and mark them clean, or keep them dirty and unwritten
    /// ("fsyncgate", PostgreSQL 2018). A node that restarts and votes or
    /// acknowledges on such a log promises what a power cut can take back. So the
    /// log, the snapshot and the directory are fsynced once at start: either they
    /// reach the disk now, or the fsync fails and the node does not start.
    fn sync_what_was_read(&mut self, snapshot_index: Option<u64>) -> Result<(), StorageError> {
        self.dir
            .sync_file(LOG_NAME)
            .map_err(io_error("syncing log at start"))?;
        if let Some(index) = snapshot_index {
            let name = snapshot_file::name(index);
            self.dir
                .sync_file(&name)
                .map_err(io_error(format!("syncing {name} at start")))?;
        }
        self.dir
            .sync_dir()
            .map_err(io_error("syncing the data dir at start"))
    }

    /// Replaces the log file with the hard state and the entries in memory.
    fn rewrite_log(&mut self) -> Result<(), StorageError> {
        self.buf.clear();
        record::encode_hard_state(&self.hard_state, &mut self.buf);
        for entry in &self.entries {
            record::encode_entry(entry, &mut self.buf);
        }
        write_durably(&mut self.dir, LOG_TEMP_NAME, LOG_NAME, &self.buf)?;
        self.log_len = self.buf.len() as u64;
        self.unsynced = false;
        Ok(())
    }
}

/// Writes `bytes` as `name` so that a crash leaves either the old file or the
/// whole new one: temp file, fsync, rename, directory fsync.
fn write_durably<D: Dir>(
    dir: &mut D,
    temp: &str,
    name: &str,
    bytes: &[u8],
) -> Result<(), StorageError> {
    dir.write_new(temp, bytes)
        .map_err(io_error(format!("writing {temp}")))?;
    dir.sync_file(temp)
        .map_err(io_error(format!("syncing {temp}")))?;
    dir.rename(temp, name)
        .map_err(io_error(format!("renaming {temp} to {name}")))?;
    dir.sync_dir().map_err(io_error(format!(
        "syncing the data dir after writing {name}"
    )))
}
