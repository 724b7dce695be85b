//! Unit tests of [`Storage`]: round trips through a reopen, group commit, the
//! shape checks on appends, snapshot compaction (§7) and failure poisoning.
//! Crash and damage tests live in `tests/storage_recovery.rs`.

use super::*;
use crate::raft::{Entry, EntryKind, HardState, RestoredState, Snapshot, SnapshotMeta};

fn entries(first: u64, last: u64, term: u64) -> Vec<Entry> {
    (first..=last)
        .map(|index| Entry {
            term,
            index,
            kind: EntryKind::Command,
            data: format!("cmd {index} of term {term}").into_bytes(),
        })
        .collect()
}

fn reopen(dir: &MemDir) -> (Storage<MemDir>, RestoredState) {
    Storage::open(dir.clone()).expect("reopen")
}

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote: Some(vote),
        commit,
    }
}

/// The same sequence on any `Dir`: append, replace a conflicting suffix, set the
/// hard state, compact, and check what a reopen sees.
fn round_trip<D: Dir>(open: impl Fn() -> D) {
    let (mut storage, recovered) = Storage::open(open()).expect("open empty");
    assert_eq!(recovered, RestoredState::default());
    storage.append(&entries(1, 6, 1)).expect("append");
    storage.append(&entries(4, 5, 2)).expect("replace 4..6");
    storage
        .set_hard_state(hard_state(2, 3, 4))
        .expect("hard state");
    storage.sync().expect("sync");
    let (mut storage, recovered) = Storage::open(open()).expect("reopen");
    let mut want = entries(1, 3, 1);
    want.extend(entries(4, 5, 2));
    assert_eq!(recovered.entries, want);
    assert_eq!(recovered.hard_state, hard_state(2, 3, 4));
    assert_eq!(storage.last_index(), 5);

    let snapshot = Snapshot {
        membership: None,
        meta: SnapshotMeta { index: 4, term: 2 },
        data: b"state".to_vec(),
    };
    storage.apply_snapshot(&snapshot).expect("compact");
    assert_eq!(storage.stored_entry_count(), 1);
    storage
        .append(&entries(6, 6, 2))
        .expect("append after compaction");
    storage.sync().expect("sync");
    let (storage, recovered) = Storage::open(open()).expect("reopen");
    assert_eq!(recovered.snapshot, Some(snapshot));
    assert_eq!(recovered.entries, entries(5, 6, 2));
    assert_eq!(
        storage.snapshot_meta(),
        Some(SnapshotMeta { index: 4, term: 2 })
    );
    assert_eq!(storage.hard_state(), hard_state(2, 3, 4));
}

#[test]
fn round_trip_on_a_simulated_disk() {
    let dir = MemDir::new();
    round_trip(|| dir.clone());
}

#[test]
fn round_trip_on_a_real_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("data");
    round_trip(|| FsDir::open(&path).expect("open dir"));
    let mut names = FsDir::open(&path).expect("open dir").list().expect("list");
    names.sort();
    assert_eq!(names, vec!["log", "snapshot-00000000000000000004"]);
}

#[test]
fn a_round_of_writes_costs_one_fsync() {
    let dir = MemDir::new();
    let (mut storage, _) = reopen(&dir);
    let before = dir.fsyncs();
    storage.set_hard_state(hard_state(1, 1, 0)).expect("hs");
    storage.append(&entries(1, 3, 1)).expect("append");
    storage.append(&entries(4, 4, 1)).expect("append");
    storage.sync().expect("sync");
    assert_eq!(dir.fsyncs(), before + 1);
    storage.sync().expect("sync with nothing new");
    storage
        .set_hard_state(hard_state(1, 1, 0))
        .expect("unchanged hs");
    storage.sync().expect("sync with nothing new");
    assert_eq!(dir.fsyncs(), before + 1);
}

#[test]
fn appends_that_would_break_the_log_are_refused_and_change_nothing() {
    let dir = MemDir::new();
    let (mut storage, _) = reopen(&dir);
    storage.append(&entries(1, 3, 1)).expect("append");
    let gap = storage.append(&entries(5, 5, 1)).expect_err("gap");
    assert!(
        gap.to_string().contains("gap after the last entry 3"),
        "{gap}"
    );
    let mut holes = entries(4, 4, 1);
    holes.extend(entries(6, 6, 1));
    assert!(storage.append(&holes).is_err(), "not consecutive");
    let mut big = entries(4, 4, 1);
    big[0].data = vec![0; MAX_ENTRY_DATA_BYTES + 1];
    assert!(storage.append(&big).is_err(), "too large");
    let vote_zero = HardState {
        term: 1,
        vote: Some(0),
        commit: 0,
    };
    assert!(storage.set_hard_state(vote_zero).is_err());
    storage.append(&entries(4, 4, 1)).expect("still usable");
    storage.sync().expect("sync");
    assert_eq!(reopen(&dir).1.entries, entries(1, 4, 1));
}

#[test]
fn snapshot_with_a_matching_term_keeps_the_entries_after_it() {
    let dir = MemDir::new();
    let (mut storage, _) = reopen(&dir);
    storage.append(&entries(1, 10, 1)).expect("append");
    let meta = SnapshotMeta { index: 7, term: 1 };
    let snapshot = Snapshot {
        meta,
        membership: None,
        data: vec![],
    };
    storage.apply_snapshot(&snapshot).expect("snapshot");
    assert_eq!(
        (storage.last_index(), storage.stored_entry_count()),
        (10, 3)
    );
    let recovered = reopen(&dir).1;
    assert_eq!(recovered.entries, entries(8, 10, 1));
    assert_eq!(recovered.hard_state.commit, 7, "a snapshot is committed");
}

#[test]
fn snapshot_conflicting_with_the_log_replaces_all_of_it() {
    let dir = MemDir::new();
    let (mut storage, _) = reopen(&dir);
    storage.append(&entries(1, 10, 1)).expect("append");
    let meta = SnapshotMeta { index: 7, term: 3 };
    storage
        .apply_snapshot(&Snapshot {
            meta,
            membership: None,
            data: vec![],
        })
        .expect("snapshot from a newer leader");
    assert_eq!((storage.last_index(), storage.stored_entry_count()), (7, 0));
    storage.append(&entries(8, 8, 3)).expect("append after it");
    storage.sync().expect("sync");
    assert_eq!(reopen(&dir).1.entries, entries(8, 8, 3));
}

#[test]
fn older_snapshots_are_removed_and_stale_ones_refused() {
    let dir = MemDir::new();
    let (mut storage, _) = reopen(&dir);
    storage.append(&entries(1, 10, 1)).expect("append");
    for index in [3, 6] {
        let meta = SnapshotMeta { index, term: 1 };
        storage
            .apply_snapshot(&Snapshot {
                meta,
                membership: None,
                data: vec![],
            })
            .expect("snapshot");
    }
    assert_eq!(
        dir.list().expect("list"),
        vec!["log", "snapshot-00000000000000000006"]
    );
    let stale = Snapshot {
        membership: None,
        meta: SnapshotMeta { index: 6, term: 1 },
        data: vec![],
    };
    assert!(matches!(
        storage.apply_snapshot(&stale),
        Err(StorageError::Invalid(_))
    ));
    let covered = storage.append(&entries(5, 5, 1)).expect_err("covered");
    assert!(
        covered.to_string().contains("covered by the snapshot"),
        "{covered}"
    );
}

#[test]
fn a_failed_write_stops_storage_until_reopened() {
    let dir = MemDir::new();
    let (mut storage, _) = reopen(&dir);
    dir.fail_after(0);
    let err = storage.append(&entries(1, 1, 1)).expect_err("disk stopped");
    assert!(err.to_string().starts_with("appending to log"), "{err}");
    dir.crash(0);
    let again = storage.append(&entries(1, 1, 1)).expect_err("poisoned");
    assert!(again.to_string().contains("reopen"), "{again}");
    let (mut storage, recovered) = reopen(&dir);
    assert!(recovered.entries.is_empty());
    storage
        .append(&entries(1, 1, 1))
        .expect("works after reopen");
}

#[test]
fn a_new_data_dir_survives_a_crash_right_after_open() {
    let dir = MemDir::new();
    let _ = reopen(&dir);
    dir.crash(7);
    assert_eq!(dir.list().expect("list"), vec!["log"]);
    assert_eq!(reopen(&dir).1, RestoredState::default());
}

/// fsyncgate: a node that exited after a failed fsync restarts on what the page
/// cache holds. What it reads at start must be on the disk before it acts on it
/// (votes, acknowledges), or a power cut takes back what it then promised.
#[test]
fn what_open_reads_is_made_durable_before_it_is_used() {
    for seed in 0..16 {
        let dir = MemDir::new();
        let (mut storage, _) = reopen(&dir);
        storage.append(&entries(1, 8, 1)).expect("append");
        storage
            .set_hard_state(hard_state(1, 2, 0))
            .expect("hard state");
        // No sync: the process died here, the page cache kept the bytes.
        drop(storage);
        let (_, read_at_start) = reopen(&dir);
        assert_eq!(read_at_start.entries, entries(1, 8, 1));
        dir.crash(seed);
        let (_, after_power_cut) = reopen(&dir);
        assert_eq!(
            after_power_cut, read_at_start,
            "seed {seed}: a power cut took back what the restarted node had read"
        );
    }
}

#[test]
fn a_node_whose_start_fsync_fails_does_not_start() {
    let dir = MemDir::new();
    let (mut storage, _) = reopen(&dir);
    storage.append(&entries(1, 2, 1)).expect("append");
    drop(storage);
    dir.fail_after(0);
    let err = Storage::open(dir.clone()).expect_err("the start fsync failed");
    assert!(err.to_string().contains("at start"), "{err}");
}
