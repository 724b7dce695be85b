//! Commits per second of the Raft core alone: a 3- and a 5-node cluster in the
//! simulator (no sockets, no disk: the storage format runs on the in-memory
//! `MemDir`), the oracle's checks off, a reliable network delivering each message
//! one tick later, and a client proposing a batch at the leader every tick (one
//! event-loop round: the batch shares one Ready, one fsync, one append per
//! follower).
//!
//! Each case runs 5 times; the table shows the median.

#[path = "../tests/sim/mod.rs"]
mod sim;

use std::time::Instant;

use raftlb::raft::Config;
use sim::Cluster;

const RUNS: usize = 5;
const ENTRIES: u64 = 200_000;

/// One run: entries committed and applied on every node per second of CPU time.
fn run(size: u64, batch: u64) -> f64 {
    let mut config = Config::new(1, (1..=size).collect());
    config.snapshot_threshold_entries = 10_000;
    let mut cluster = Cluster::with_config(config, 7);
    let leader = cluster.wait_for_leader(1_000);
    cluster.checks = false;
    let start_index = cluster.raft(leader).commit_index();
    let target = start_index + ENTRIES;
    let started = Instant::now();
    let mut proposed = 0;
    while cluster
        .ids()
        .iter()
        .any(|&id| cluster.node(id).sm.applied_index < target)
    {
        if proposed < ENTRIES {
            // One event-loop round: the batch is proposed, then one Ready persists
            // and sends it all.
            for value in proposed..proposed + batch {
                let raft = cluster.raft_mut(leader);
                raft.propose(value.to_le_bytes().to_vec())
                    .expect("a stable leader accepts proposals");
            }
            cluster.process_ready(leader);
            proposed += batch;
        }
        cluster.tick();
    }
    ENTRIES as f64 / started.elapsed().as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    println!("raft core in the simulator (no I/O), {ENTRIES} entries, median of {RUNS} runs");
    println!("{:<10} {:>16} {:>18}", "nodes", "batch/tick", "commits/s");
    for size in [3, 5] {
        for batch in [1, 64] {
            let rate = median((0..RUNS).map(|_| run(size, batch)).collect());
            println!("{:<10} {:>16} {:>18.0}", size, batch, rate);
        }
    }
}
