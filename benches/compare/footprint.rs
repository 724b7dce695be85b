//! A node's memory and disk: RSS (VmRSS) of every node when idle after start,
//! then after a million committed entries, and the data dirs' size then. The
//! log is compacted into snapshots (every 5,000 entries or 2 MiB), so neither
//! should grow with the entry count.
//!
//! The entries are note writes of 100 bytes sent to the leader by `raftlb
//! bench note`: each write is one entry, and it is the fastest honest way
//! (load reports are batched into one entry per 10 ms tick). Concurrency 64:
//! the replication rows' highest, and all of it fits the 64 note requests a
//! node lets wait at once (`server::note::WAITING_MAX`).

use std::time::Duration;

use crate::loadgen;
use crate::procs::{disk_use_kib, rss_kib};
use crate::support::Cluster;
use crate::table::{Report, Row};
use crate::Settings;

const RSS_GOAL_MIB: f64 = 20.0;
const WRITERS: usize = 64;
/// Runs of the load tool at most, should some writes fail.
const ROUNDS_MAX: usize = 5;

/// (largest RSS in KiB, its node's id) over the running nodes.
fn rss_max(cluster: &Cluster) -> (u64, String) {
    (0..cluster.nodes.len())
        .filter_map(|i| {
            Some((
                rss_kib(cluster.nodes[i].as_ref()?.pid()),
                cluster.ids[i].clone(),
            ))
        })
        .max()
        .unwrap_or_default()
}

/// The largest data dir, in KiB.
fn data_max_kib(cluster: &Cluster) -> u64 {
    cluster
        .ids
        .iter()
        .map(|id| disk_use_kib(&cluster.path(&format!("data-{id}"))))
        .max()
        .unwrap_or(0)
}

/// KiB below one MiB, MiB above.
fn mib(kib: u64) -> String {
    if kib < 1024 {
        format!("{kib} KiB")
    } else {
        format!("{:.1} MiB", kib as f64 / 1024.0)
    }
}

/// The idle row: call on a cluster that has just started and settled.
pub fn idle(cluster: &Cluster, report: &mut Report) {
    let (rss, id) = rss_max(cluster);
    report.row(
        Row::new(
            "footprint",
            "node RSS, idle after start (max of 5 nodes)",
            format!("{} (node {id})", mib(rss)),
        )
        .goal(
            format!("< {RSS_GOAL_MIB} MiB"),
            (rss as f64 / 1024.0) < RSS_GOAL_MIB,
        ),
    );
    report.note(format!(
        "data dir right after start: {} at most",
        mib(data_max_kib(cluster))
    ));
}

/// Commits `settings.footprint_entries` note writes, then the rows after them.
pub fn after_entries(cluster: &Cluster, settings: &Settings, report: &mut Report) {
    let entries = settings.footprint_entries;
    let what = format!(
        "node RSS after {} committed entries (max of 5)",
        loadgen::thousands(entries as f64)
    );
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    let start_index = commit_index(cluster, leader);
    let target = format!("http://127.0.0.1:{}", cluster.ports[leader]);
    let started = std::time::Instant::now();
    for _ in 0..ROUNDS_MAX {
        let done = commit_index(cluster, leader).saturating_sub(start_index);
        if done >= entries {
            break;
        }
        // Bounded in time as well as count: at 300 writes/s it would still end.
        let mut args = loadgen::timed("note", &target, WRITERS, 3600, 0);
        args.extend([
            "--max-requests".into(),
            (entries - done).to_string(),
            "--size-bytes".into(),
            "100".into(),
        ]);
        let (result, command) = loadgen::run(&args, "raftlb, the leader");
        report.command("footprint", command);
        if let Err(e) = result {
            report.row(Row::error("footprint", what, &e));
            return;
        }
    }
    let committed = commit_index(cluster, leader).saturating_sub(start_index);
    let secs = started.elapsed().as_secs_f64();
    report.note(format!(
        "footprint: {committed} entries committed in {secs:.0} s ({:.0}/s) by {WRITERS} note writers on leader {}",
        committed as f64 / secs,
        cluster.ids[leader]
    ));
    // Let every follower apply the tail and the loop compact it.
    std::thread::sleep(Duration::from_secs(2));
    let (rss, id) = rss_max(cluster);
    let ok = committed >= entries && (rss as f64 / 1024.0) < RSS_GOAL_MIB;
    report.row(
        Row::new("footprint", what, format!("{} (node {id})", mib(rss)))
            .goal(format!("< {RSS_GOAL_MIB} MiB"), ok),
    );
    report.row(Row::new(
        "footprint",
        format!(
            "data dir after {} entries (max of 5, du)",
            loadgen::thousands(committed as f64)
        ),
        mib(data_max_kib(cluster)),
    ));
}

fn commit_index(cluster: &Cluster, i: usize) -> u64 {
    cluster.status(i).map_or(0, |s| s.commit_index)
}
