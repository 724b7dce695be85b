//! Reading the data dir at start: the newest snapshot, the log replayed on top of
//! it, a torn tail cut, leftovers of an interrupted snapshot install removed.
//!
//! Every state a crash can leave is handled here rather than prevented elsewhere:
//! a temp file (removed), an older snapshot beside the newest (removed), a log
//! still holding entries the newest snapshot covers (skipped, or dropped when they
//! conflict with it, §7), a torn tail (cut). Anything else is corruption.

use super::record::{self, Record};
use super::MAX_LOG_FILE_BYTES;
use super::{io_error, snapshot_file, Dir, StorageError, LOG_NAME, LOG_TEMP_NAME};
use crate::raft::{Entry, HardState, Snapshot, SnapshotMeta};

/// The data dir as found, before the log is made to start right after the snapshot.
pub(super) struct Found {
    pub snapshot: Option<Snapshot>,
    pub hard_state: HardState,
    /// The log's entries, consecutive, possibly starting at or before the snapshot.
    pub entries: Vec<Entry>,
    /// The offset of the log's first entry record, to point at a gap.
    pub first_entry_offset: u64,
    /// The log's length after any tail cut; None when there is no log file.
    pub log_len: Option<u64>,
}

/// Reads the data dir, removing leftovers and cutting a torn tail.
pub(super) fn read_dir<D: Dir>(dir: &mut D) -> Result<Found, StorageError> {
    let names = dir.list().map_err(io_error("listing the data dir"))?;
    for temp in [LOG_TEMP_NAME, snapshot_file::TEMP_NAME] {
        if names.iter().any(|n| n == temp) {
            log::info!("removing {temp}, left by a write a crash interrupted");
            dir.remove(temp)
                .map_err(io_error(format!("removing {temp}")))?;
        }
    }
    let snapshot = read_newest_snapshot(dir, &names)?;
    if !names.iter().any(|n| n == LOG_NAME) {
        return Ok(Found {
            snapshot,
            hard_state: HardState::default(),
            entries: Vec::new(),
            first_entry_offset: 0,
            log_len: None,
        });
    }
    let (records, log_len) = read_log(dir)?;
    let (hard_state, entries, first_entry_offset) = replay(records)?;
    Ok(Found {
        snapshot,
        hard_state,
        entries,
        first_entry_offset,
        log_len: Some(log_len),
    })
}

/// The newest snapshot, checked whole; older ones (left when a crash interrupted
/// their removal) are removed.
fn read_newest_snapshot<D: Dir>(
    dir: &mut D,
    names: &[String],
) -> Result<Option<Snapshot>, StorageError> {
    let mut indexes: Vec<u64> = names
        .iter()
        .filter_map(|n| snapshot_file::parse_name(n))
        .collect();
    indexes.sort_unstable();
    let Some((&newest, older)) = indexes.split_last() else {
        return Ok(None);
    };
    let name = snapshot_file::name(newest);
    let max_bytes = snapshot_file::MAX_FILE_BYTES;
    let bytes = dir
        .read(&name, max_bytes)
        .map_err(io_error(format!("reading {name}")))?;
    let corrupt = |reason: String| StorageError::Corrupt {
        file: name.clone(),
        offset: 0,
        reason,
    };
    let snapshot = snapshot_file::decode(&bytes).map_err(|fault| corrupt(fault.to_string()))?;
    if snapshot.meta.index != newest {
        let index = snapshot.meta.index;
        return Err(corrupt(format!(
            "holds entry {index}, not the one its name says"
        )));
    }
    for &index in older {
        let old = snapshot_file::name(index);
        dir.remove(&old)
            .map_err(io_error(format!("removing the replaced {old}")))?;
    }
    Ok(Some(snapshot))
}

/// The log's intact records and its length, after cutting a torn tail.
fn read_log<D: Dir>(dir: &mut D) -> Result<(Vec<(u64, Record)>, u64), StorageError> {
    let bytes = dir
        .read(LOG_NAME, MAX_LOG_FILE_BYTES)
        .map_err(io_error("reading log"))?;
    let scan = record::scan(&bytes);
    let Some((offset, reason)) = scan.failure else {
        return Ok((scan.records, scan.valid_len));
    };
    // A crash can only tear the end of what was appended last, so an intact record
    // at or after the failure means the damage is inside the log, not a torn tail.
    if record::valid_frame_at(&bytes, offset) || record::valid_frame_after(&bytes, offset).is_some()
    {
        return Err(StorageError::Corrupt {
            file: LOG_NAME.to_string(),
            offset,
            reason,
        });
    }
    let cut_bytes = bytes.len() as u64 - scan.valid_len;
    log::warn!("log: cutting a torn tail of {cut_bytes} bytes at offset {offset} ({reason})");
    dir.set_len(LOG_NAME, scan.valid_len)
        .map_err(io_error("cutting the torn tail of log"))?;
    dir.sync_file(LOG_NAME)
        .map_err(io_error("syncing log after cutting its tail"))?;
    Ok((scan.records, scan.valid_len))
}

/// Replays the records: the last hard state wins, and an entry at or below the
/// last index replaces the suffix from there. Returns the hard state, the entries
/// and the offset of the first entry record.
fn replay(records: Vec<(u64, Record)>) -> Result<(HardState, Vec<Entry>, u64), StorageError> {
    let mut hard_state = HardState::default();
    let mut entries: Vec<Entry> = Vec::new();
    let mut first_entry_offset = 0;
    for (offset, record) in records {
        let entry = match record {
            Record::HardState(hs) => {
                hard_state = hs;
                continue;
            }
            Record::Entry(entry) => entry,
        };
        let corrupt = |reason: String| StorageError::Corrupt {
            file: LOG_NAME.to_string(),
            offset,
            reason,
        };
        match entries.first().map(|e| e.index) {
            _ if entry.index == 0 => return Err(corrupt("entry with index 0".to_string())),
            None => first_entry_offset = offset,
            Some(first) => {
                let next = first + entries.len() as u64;
                if entry.index < first || entry.index > next {
                    return Err(corrupt(format!(
                        "entry {} out of order (the log holds {first}..{next})",
                        entry.index
                    )));
                }
                entries.truncate((entry.index - first) as usize);
            }
        }
        entries.push(entry);
    }
    Ok((hard_state, entries, first_entry_offset))
}

/// The log starts after the entry that follows the snapshot: entries are missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LogGap {
    pub first: u64,
    pub snapshot_index: u64,
}

impl std::fmt::Display for LogGap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let LogGap {
            first,
            snapshot_index,
        } = self;
        write!(
            f,
            "the log starts at entry {first} but the snapshot ends at {snapshot_index}: entries are missing"
        )
    }
}

/// The entries that follow a snapshot ending at `meta`, out of consecutive
/// `entries` that start at or before the entry right after it. Entries the
/// snapshot covers go; the rest stay only if the entry at the snapshot's index
/// has the snapshot's term (§7: otherwise they conflict with the snapshot's
/// history). Returns the entries and whether any were dropped; an error when
/// `entries` start after the snapshot's successor (a gap).
pub(super) fn entries_after_snapshot(
    mut entries: Vec<Entry>,
    meta: SnapshotMeta,
) -> Result<(Vec<Entry>, bool), LogGap> {
    let Some(first) = entries.first().map(|e| e.index) else {
        return Ok((entries, false));
    };
    if first > meta.index + 1 {
        return Err(LogGap {
            first,
            snapshot_index: meta.index,
        });
    }
    if first == meta.index + 1 {
        return Ok((entries, false));
    }
    let at = (meta.index - first) as usize;
    match entries.get(at) {
        Some(entry) if entry.term == meta.term => Ok((entries.split_off(at + 1), true)),
        _ => Ok((Vec::new(), true)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::EntryKind;

    fn log(first: u64, terms: &[u64]) -> Vec<Entry> {
        let entry = |(i, &term): (usize, &u64)| Entry {
            term,
            index: first + i as u64,
            kind: EntryKind::Noop,
            data: Vec::new(),
        };
        terms.iter().enumerate().map(entry).collect()
    }

    #[test]
    fn entries_covered_by_the_snapshot_are_skipped_when_its_term_matches() {
        let meta = SnapshotMeta { index: 2, term: 1 };
        let (kept, dropped) = entries_after_snapshot(log(1, &[1, 1, 2]), meta).expect("ok");
        assert_eq!(kept, log(3, &[2]));
        assert!(dropped);
    }

    #[test]
    fn entries_conflicting_with_the_snapshot_are_dropped() {
        let meta = SnapshotMeta { index: 2, term: 3 };
        let (kept, _) = entries_after_snapshot(log(1, &[1, 1, 2]), meta).expect("ok");
        assert!(kept.is_empty());
        let short = SnapshotMeta { index: 9, term: 3 };
        assert!(entries_after_snapshot(log(1, &[1]), short)
            .expect("ok")
            .0
            .is_empty());
    }

    #[test]
    fn a_log_starting_after_the_snapshot_is_a_gap() {
        let meta = SnapshotMeta { index: 2, term: 1 };
        assert!(entries_after_snapshot(log(4, &[1]), meta).is_err());
        let (kept, dropped) = entries_after_snapshot(log(3, &[1]), meta).expect("ok");
        assert_eq!((kept.len(), dropped), (1, false));
    }
}
