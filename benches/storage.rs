//! Appends per second on a real directory with fsync, unbatched (one entry per
//! sync, as a node that syncs every proposal would) against batched (64 entries
//! per sync, the group commit the runtime does per event-loop round).
//!
//! Each case runs 5 times in a fresh tempdir; the table shows the medians. The
//! numbers depend on the disk's fsync latency far more than on this code.

use std::time::Instant;

use raftlb::raft::{Entry, EntryKind};
use raftlb::storage::{FsDir, Storage};

const RUNS: usize = 5;
const ENTRY_DATA_BYTES: usize = 100;

struct Case {
    name: &'static str,
    entries_per_sync: u64,
    syncs: u64,
}

/// One run: returns (entries/s, syncs/s).
fn run(case: &Case) -> (f64, f64) {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir under target/");
    let dir = FsDir::open(tmp.path()).expect("data dir");
    let (mut storage, _) = Storage::open(dir).expect("open");
    let mut index = 0;
    let started = Instant::now();
    for _ in 0..case.syncs {
        let batch: Vec<Entry> = (0..case.entries_per_sync)
            .map(|_| {
                index += 1;
                Entry {
                    term: 1,
                    index,
                    kind: EntryKind::Command,
                    data: vec![7; ENTRY_DATA_BYTES],
                }
            })
            .collect();
        storage.append(&batch).expect("append");
        storage.sync().expect("sync");
    }
    let seconds = started.elapsed().as_secs_f64();
    (index as f64 / seconds, case.syncs as f64 / seconds)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let cases = [
        Case {
            name: "unbatched (1 entry/sync)",
            entries_per_sync: 1,
            syncs: 500,
        },
        Case {
            name: "batched (64 entries/sync)",
            entries_per_sync: 64,
            syncs: 200,
        },
    ];
    println!("storage append + fsync, {ENTRY_DATA_BYTES}-byte entries, median of {RUNS} runs");
    println!("{:<28} {:>14} {:>12}", "case", "entries/s", "syncs/s");
    for case in &cases {
        let runs: Vec<(f64, f64)> = (0..RUNS).map(|_| run(case)).collect();
        let entries = median(runs.iter().map(|r| r.0).collect());
        let syncs = median(runs.iter().map(|r| r.1).collect());
        println!("{:<28} {:>14.0} {:>12.0}", case.name, entries, syncs);
    }
}
