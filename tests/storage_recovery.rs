//! Crash and damage tests of the storage layer on the simulated disk: what a power
//! cut leaves is always reopened to the synced state or a longer consistent prefix,
//! a snapshot install can be interrupted at any step, a torn tail is cut at every
//! byte offset, and damage before the tail is refused with the file and offset.

use raftlb::raft::RestoredState;
use raftlb::raft::{Entry, EntryKind, HardState, Snapshot, SnapshotMeta};
use raftlb::storage::{Dir, MemDir, Storage, StorageError, LOG_NAME};

fn entries(first: u64, last: u64, term: u64) -> Vec<Entry> {
    (first..=last)
        .map(|index| Entry {
            term,
            index,
            kind: if index % 5 == 0 {
                EntryKind::Noop
            } else {
                EntryKind::Command
            },
            data: vec![index as u8; (index * 7 % 23) as usize],
        })
        .collect()
}

fn hard_state(term: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote: Some(1 + term % 3),
        commit,
    }
}

fn open(dir: &MemDir) -> Result<(Storage<MemDir>, RestoredState), StorageError> {
    Storage::open(dir.clone())
}

/// The states a reader may see after each record of a write, in order: a torn
/// write keeps some prefix of the records, so any of them may survive a crash.
fn states_after_each_record(
    mut state: (HardState, Vec<Entry>),
    writes: &[Write],
) -> Vec<(HardState, Vec<Entry>)> {
    let mut states = vec![state.clone()];
    for write in writes {
        match write {
            Write::HardState(hs) => {
                state.0 = *hs;
                states.push(state.clone());
            }
            Write::Entries(batch) => {
                for entry in batch {
                    state.1.truncate((entry.index - 1) as usize);
                    state.1.push(entry.clone());
                    states.push(state.clone());
                }
            }
        }
    }
    states
}

enum Write {
    HardState(HardState),
    Entries(Vec<Entry>),
}

#[test]
fn crash_keeps_the_synced_state_or_a_longer_consistent_prefix() {
    let synced_entries = entries(1, 12, 1);
    let synced_hs = hard_state(1, 4);
    let unsynced = [
        Write::HardState(hard_state(2, 6)),
        Write::Entries(entries(9, 14, 2)),
        Write::HardState(hard_state(2, 11)),
        Write::Entries(entries(15, 16, 2)),
    ];
    let possible = states_after_each_record((synced_hs, synced_entries.clone()), &unsynced);
    let mut seen_longer = false;
    for seed in 0..300 {
        let dir = MemDir::new();
        let (mut storage, _) = open(&dir).expect("open");
        storage.append(&synced_entries).expect("append");
        storage.set_hard_state(synced_hs).expect("hs");
        storage.sync().expect("sync");
        for write in &unsynced {
            match write {
                Write::HardState(hs) => storage.set_hard_state(*hs).expect("hs"),
                Write::Entries(batch) => storage.append(batch).expect("append"),
            }
        }
        drop(storage);
        dir.crash(seed);
        let (_, recovered) = open(&dir).expect("reopen after crash");
        let got = (recovered.hard_state, recovered.entries);
        let position = possible.iter().position(|s| *s == got);
        assert!(
            position.is_some(),
            "seed {seed}: inconsistent state {got:?}"
        );
        seen_longer |= position > Some(0);
        let (_, again) = open(&dir).expect("second reopen");
        assert_eq!(
            (again.hard_state, again.entries),
            got,
            "seed {seed}: stable"
        );
    }
    assert!(seen_longer, "some seed should keep torn unsynced records");
}

/// Interrupts `apply_snapshot` after every number of disk changes, crashes, and
/// checks the reopened state is the old one or the new one, then still usable.
fn snapshot_install_survives_a_crash_at_every_step(meta: SnapshotMeta, kept_after: Vec<Entry>) {
    let old_entries = entries(1, 20, 1);
    let snapshot = Snapshot {
        membership: None,
        meta,
        data: b"load table".to_vec(),
    };
    for ops_allowed in 0.. {
        for seed in 0..8 {
            let dir = MemDir::new();
            let (mut storage, _) = open(&dir).expect("open");
            storage.append(&entries(1, 4, 1)).expect("append");
            let old = Snapshot {
                membership: None,
                meta: SnapshotMeta { index: 3, term: 1 },
                data: b"old".to_vec(),
            };
            storage.apply_snapshot(&old).expect("first snapshot");
            storage.append(&entries(5, 20, 1)).expect("append");
            storage.sync().expect("sync");
            dir.fail_after(ops_allowed);
            let finished = storage.apply_snapshot(&snapshot).is_ok();
            drop(storage);
            dir.crash(seed);
            let (mut storage, recovered) = open(&dir).expect("reopen after crash");
            if recovered.snapshot.as_ref() == Some(&snapshot) {
                assert_eq!(recovered.entries, kept_after, "ops {ops_allowed}");
            } else {
                assert!(!finished, "ops {ops_allowed}: a finished install was lost");
                assert_eq!(recovered.snapshot, Some(old), "ops {ops_allowed}");
                assert_eq!(recovered.entries, old_entries[3..], "ops {ops_allowed}");
            }
            // Appending after recovery must not bring back dropped entries.
            let next = storage.last_index() + 1;
            storage.append(&entries(next, next, 7)).expect("append");
            storage.sync().expect("sync");
            let (_, again) = open(&dir).expect("reopen");
            assert_eq!(again.entries.last(), entries(next, next, 7).last());
            assert_eq!(again.entries.len(), recovered.entries.len() + 1);
            if finished {
                // Two durable file replacements of four steps each, at least.
                assert!(ops_allowed >= 8, "only {ops_allowed} crash points tried");
                return;
            }
        }
    }
}

#[test]
fn local_compaction_survives_a_crash_at_every_step() {
    let meta = SnapshotMeta { index: 12, term: 1 };
    snapshot_install_survives_a_crash_at_every_step(meta, entries(13, 20, 1));
}

#[test]
fn conflicting_snapshot_from_a_leader_survives_a_crash_at_every_step() {
    let meta = SnapshotMeta { index: 15, term: 4 };
    snapshot_install_survives_a_crash_at_every_step(meta, Vec::new());
}

#[test]
fn snapshot_past_the_log_end_survives_a_crash_at_every_step() {
    let meta = SnapshotMeta { index: 40, term: 4 };
    snapshot_install_survives_a_crash_at_every_step(meta, Vec::new());
}

/// A log of a hard state and 20 entries written one record per append, with the
/// end offset of each record.
fn written_log() -> (Vec<u8>, Vec<usize>) {
    let dir = MemDir::new();
    let (mut storage, _) = open(&dir).expect("open");
    let mut ends = Vec::new();
    storage.set_hard_state(hard_state(1, 0)).expect("hs");
    ends.push(dir.file_bytes(LOG_NAME).expect("log").len());
    for entry in entries(1, 20, 1) {
        storage.append(&[entry]).expect("append");
        ends.push(dir.file_bytes(LOG_NAME).expect("log").len());
    }
    storage.sync().expect("sync");
    (dir.file_bytes(LOG_NAME).expect("log"), ends)
}

fn dir_with_log(bytes: &[u8]) -> MemDir {
    let dir = MemDir::new();
    dir.set_file_bytes(LOG_NAME, bytes);
    dir
}

#[test]
fn log_cut_at_any_offset_of_its_last_records_recovers_the_whole_records() {
    let (bytes, ends) = written_log();
    let start = ends[ends.len() - 4];
    for cut in start..=bytes.len() {
        let dir = dir_with_log(&bytes[..cut]);
        let (_, recovered) = open(&dir).expect("a torn tail is cut, not refused");
        let whole_entries = ends[1..].iter().filter(|&&end| end <= cut).count();
        assert_eq!(
            recovered.entries,
            entries(1, 20, 1)[..whole_entries],
            "cut {cut}"
        );
        assert_eq!(recovered.hard_state, hard_state(1, 0));
        let kept = ends.iter().rev().find(|&&end| end <= cut).expect("hs fits");
        assert_eq!(
            dir.file_bytes(LOG_NAME).expect("log").len(),
            *kept,
            "cut {cut}"
        );
    }
}

#[test]
fn any_flipped_byte_of_the_last_record_is_cut_as_a_torn_tail() {
    let (bytes, ends) = written_log();
    for at in ends[ends.len() - 2]..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0xFF;
        let (_, recovered) = open(&dir_with_log(&damaged)).expect("tail cut");
        assert_eq!(recovered.entries, entries(1, 19, 1), "flip at {at}");
    }
}

#[test]
fn a_flipped_byte_before_the_tail_refuses_to_start_naming_the_record() {
    let (bytes, ends) = written_log();
    let (record_start, record_end) = (ends[4], ends[5]);
    for at in record_start..record_end {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0xFF;
        let err = open(&dir_with_log(&damaged)).expect_err("damage inside the log");
        match &err {
            StorageError::Corrupt { file, offset, .. } => {
                assert_eq!((file.as_str(), *offset), (LOG_NAME, record_start as u64));
            }
            other => panic!("flip at {at}: expected corruption, got {other}"),
        }
        let message = err.to_string();
        let want = format!("data dir corrupt: log at offset {record_start}: ");
        assert!(message.starts_with(&want), "{message}");
    }
}

#[test]
fn a_damaged_snapshot_file_refuses_to_start() {
    let dir = MemDir::new();
    let (mut storage, _) = open(&dir).expect("open");
    storage.append(&entries(1, 5, 1)).expect("append");
    let meta = SnapshotMeta { index: 4, term: 1 };
    let snapshot = Snapshot {
        membership: None,
        meta,
        data: b"table".to_vec(),
    };
    storage.apply_snapshot(&snapshot).expect("snapshot");
    drop(storage);
    let name = "snapshot-00000000000000000004";
    let bytes = dir.file_bytes(name).expect("snapshot file");
    for at in 0..bytes.len() {
        for damaged in [flipped(&bytes, at), bytes[..at].to_vec()] {
            dir.set_file_bytes(name, &damaged);
            match open(&dir) {
                Err(StorageError::Corrupt { file, .. }) => assert_eq!(file, name),
                Err(other) => panic!("byte {at}: expected corruption, got {other}"),
                Ok(_) => panic!("byte {at}: damaged snapshot accepted"),
            }
        }
    }
    dir.set_file_bytes(name, &bytes);
    dir.set_file_bytes("snapshot.tmp", b"half a snapsh");
    let (_, recovered) = open(&dir).expect("a leftover temp file is removed");
    assert_eq!(recovered.snapshot, Some(snapshot));
    assert!(!dir
        .list()
        .expect("list")
        .contains(&"snapshot.tmp".to_string()));
}

fn flipped(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut damaged = bytes.to_vec();
    damaged[at] ^= 0xFF;
    damaged
}

#[test]
fn a_log_starting_after_the_snapshot_is_refused_as_a_gap() {
    let dir = MemDir::new();
    let (mut storage, _) = open(&dir).expect("open");
    storage.append(&entries(1, 9, 1)).expect("append");
    let meta = SnapshotMeta { index: 3, term: 1 };
    storage
        .apply_snapshot(&Snapshot {
            meta,
            membership: None,
            data: vec![],
        })
        .expect("snapshot");
    drop(storage);
    // As if the snapshot file were lost: the log starts at 4 with nothing before it.
    let mut handle = dir.clone();
    handle
        .remove("snapshot-00000000000000000003")
        .expect("remove");
    let err = open(&dir).expect_err("refused");
    assert!(err.to_string().contains("entries are missing"), "{err}");
    assert!(matches!(err, StorageError::Corrupt { file, .. } if file == LOG_NAME));
}

/// The same damage on a real directory through `FsDir`: a log cut inside its last
/// record (as a power cut during an append leaves it) reopens to the whole records
/// and is trimmed on disk; a flipped byte in an early record refuses to start with
/// the file and offset in the message.
#[test]
fn real_files_recover_from_a_torn_tail_and_refuse_early_damage() {
    use raftlb::storage::FsDir;
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("data");
    let written = entries(1, 10, 2);
    {
        let (mut storage, _) = Storage::open(FsDir::open(&path).expect("dir")).expect("open");
        storage.append(&written).expect("append");
        storage
            .set_hard_state(hard_state(2, 7))
            .expect("hard state");
        storage.sync().expect("sync");
    }
    let log = path.join(LOG_NAME);
    let full = std::fs::read(&log).expect("read log");
    // Cut 3 bytes into the last record: the hard state record, written last, is
    // torn, so the entries survive and the hard state before it (none) is used.
    std::fs::write(&log, &full[..full.len() - 3]).expect("cut");
    let (_, restored) =
        Storage::open(FsDir::open(&path).expect("dir")).expect("a torn tail reopens");
    assert_eq!(restored.entries, written);
    assert_eq!(
        restored.hard_state.term, 0,
        "the torn hard state is not half-read"
    );
    let trimmed = std::fs::read(&log).expect("read log").len();
    assert!(
        trimmed < full.len() - 3,
        "the torn bytes were cut from the file"
    );
    // Damage the third byte of the first record's payload: not a tail any more.
    let mut damaged = std::fs::read(&log).expect("read log");
    damaged[14] ^= 0xFF;
    std::fs::write(&log, &damaged).expect("damage");
    let err =
        Storage::open(FsDir::open(&path).expect("dir")).expect_err("early damage refuses to start");
    let message = err.to_string();
    assert!(message.contains("log at offset 0"), "{message}");
}
