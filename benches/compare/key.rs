//! What the cluster key costs: the same measurements with the key on (every
//! datagram tagged and checked, every report signed: the default) and on a
//! second cluster started with `--insecure` (what raftlb was before the key),
//! same options otherwise. Failover is timed by `failover.rs`'s trials, the two
//! clusters taking turns; writes/s by `replication.rs`'s load at its goal
//! concurrency against each leader, alternating. The keyed cluster is the run's
//! main cluster; the insecure one lives for this section only.

use std::time::Duration;

use crate::failover::{self, Members, Trial};
use crate::loadgen::median;
use crate::replication;
use crate::support::Cluster;
use crate::table::{Report, Row};
use crate::Settings;

/// Within 5% of before (issue 12): failover at most this much longer, writes/s
/// at least this share.
const FAILOVER_RATIO_MAX: f64 = 1.05;
const WRITES_RATIO_MIN: f64 = 0.95;
/// Rounds of (keyed, insecure) write loads: the row shows the medians.
const WRITE_ROUNDS: usize = 3;

pub fn run(keyed: &mut Cluster, settings: &Settings, report: &mut Report) {
    let mut insecure = Cluster::start(crate::cluster_options(true));
    insecure.wait_for_leader(Duration::from_secs(30));
    insecure.wait_for_servers(&[true, true, true], Duration::from_secs(30));
    // The two sides must differ in the key and nothing else: each node's
    // /status says whether it runs without one.
    let says = |c: &Cluster| -> Vec<Option<bool>> {
        (0..c.nodes.len())
            .map(|i| c.status(i).map(|s| s.insecure))
            .collect()
    };
    let (keyed_says, insecure_says) = (says(keyed), says(&insecure));
    if keyed_says.iter().any(|s| *s != Some(false))
        || insecure_says.iter().any(|s| *s != Some(true))
    {
        let e = format!(
            "/status insecure: keyed cluster {keyed_says:?}, insecure cluster {insecure_says:?}"
        );
        return report.row(Row::error("key", "key on vs --insecure", &e));
    }
    report.note("key: /status says insecure=false on every node of the main cluster and true on every node of the --insecure one");
    report.command(
        "key",
        format!("raftlb-node --id A --nodes … --insecure   # the insecure cluster, nodes {:?}, daemons --insecure too", insecure.ports),
    );
    // Half the failover section's trials: a second 5-node cluster's trials
    // take as long again as the first's.
    let trials = (settings.trials / 2).max(5);
    let [with_key, without] = failover::alternate(
        [
            ("raftlb keyed", keyed as &mut dyn Members),
            ("raftlb insecure", &mut insecure as &mut dyn Members),
        ],
        trials,
        report,
    );
    failover_row(&with_key, &without, report);
    writes_row(keyed, &insecure, settings, report);
}

fn failover_row(with_key: &[Trial], without: &[Trial], report: &mut Report) {
    let (a, b) = (
        failover::failover_times(with_key),
        failover::failover_times(without),
    );
    let (a50, b50) = (failover::percentile(&a, 50), failover::percentile(&b, 50));
    let r = a50 / b50;
    report.row(
        Row::new(
            "key",
            "failover, key on vs --insecure: SIGKILL of the leader → all live members agree on a new one (half the failover section's trials, alternating)",
            format!("key on: {}", failover::spread(&a)),
        )
        .against(format!("--insecure: {}", failover::spread(&b)))
        .ratio(a50, b50, "p50, key ÷ insecure")
        .goal(format!("≤ {FAILOVER_RATIO_MAX}"), r <= FAILOVER_RATIO_MAX),
    );
}

fn writes_row(keyed: &Cluster, insecure: &Cluster, settings: &Settings, report: &mut Report) {
    let c = replication::GOAL_CONCURRENCY;
    let what = format!("100-byte note writes, 5 members, fsync, {c} writers, key on vs --insecure");
    let rounds = if settings.quick { 1 } else { WRITE_ROUNDS };
    let (mut ours, mut before) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (cluster, label, out) in [
            (keyed, "raftlb keyed, the leader", &mut ours),
            (insecure, "raftlb --insecure, the leader", &mut before),
        ] {
            let leader = cluster.wait_for_leader(Duration::from_secs(20));
            let url = cluster.url(leader, "");
            match replication::writes(&url, c, false, label, "key", settings, report) {
                Ok(l) => out.push(l),
                Err(e) => return report.row(Row::error("key", what, &e)),
            }
        }
    }
    let (Some(a), Some(b)) = (median(&ours), median(&before)) else {
        return report.row(Row::error("key", what, "no load"));
    };
    let r = a.per_sec / b.per_sec;
    report.row(
        Row::new(
            "key",
            format!("{what} ({rounds} round(s), medians)"),
            format!("key on: {}", a.summary(" writes")),
        )
        .against(format!("--insecure: {}", b.summary(" writes")))
        .ratio(a.per_sec, b.per_sec, "per s, key ÷ insecure")
        .goal(format!("≥ {WRITES_RATIO_MIN}"), r >= WRITES_RATIO_MIN),
    );
}
