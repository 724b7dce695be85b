//! Replicated writes: raftlb note writes (`PUT /note`) beside etcd puts of the
//! same size (100 bytes), both to the leader of 5 members on loopback, both
//! acknowledged only after a majority fsynced, at 1, 16 and 64 closed-loop
//! writers; raftlb and etcd alternate at each concurrency so that both see the
//! same state of the machine.

use std::time::Duration;

use crate::etcd::Etcd;
use crate::loadgen::{self, Load};
use crate::support::Cluster;
use crate::table::{Report, Row};
use crate::Settings;

const CONCURRENCY: [usize; 3] = [1, 16, 64];
const SIZE_BYTES: &str = "100";
/// The concurrency at which the issue sets the goal.
pub const GOAL_CONCURRENCY: usize = 64;

pub fn run(cluster: &Cluster, etcd: &Etcd, settings: &Settings, report: &mut Report) {
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    let etcd_leader = etcd.wait_for_leader(Duration::from_secs(20));
    report.note(format!(
        "replication: raftlb writes go to leader {}, etcd puts to leader m{etcd_leader}",
        cluster.ids[leader]
    ));
    let ours_url = cluster.url(leader, "");
    let etcd_url = etcd.url(etcd_leader);
    for c in CONCURRENCY {
        let what = format!("100-byte writes, 5 members, fsync, {c} writer(s)");
        let ours = match load(&ours_url, c, false, settings, report) {
            Ok(l) => l,
            Err(e) => {
                report.row(Row::error("replication", what, &e));
                continue;
            }
        };
        let mut row = Row::new("replication", what, ours.summary(" writes"));
        match load(&etcd_url, c, true, settings, report) {
            Ok(theirs) => {
                row = row
                    .against(format!("etcd puts: {}", theirs.summary(" puts")))
                    .ratio(ours.per_sec, theirs.per_sec, "per s, raftlb ÷ etcd");
                if c == GOAL_CONCURRENCY {
                    row = row.goal("≥ 1", ours.per_sec >= theirs.per_sec);
                }
            }
            Err(e) => row = row.against(format!("etcd: error: {e}")),
        }
        report.row(row);
    }
}

fn load(
    url: &str,
    concurrency: usize,
    etcd: bool,
    settings: &Settings,
    report: &mut Report,
) -> Result<Load, String> {
    let label = if etcd {
        "etcd, the leader"
    } else {
        "raftlb, the leader"
    };
    writes(
        url,
        concurrency,
        etcd,
        label,
        "replication",
        settings,
        report,
    )
}

/// One timed load of 100-byte writes at `concurrency` writers against `url`,
/// etcd's puts when `etcd`; the command is kept under `section`.
pub fn writes(
    url: &str,
    concurrency: usize,
    etcd: bool,
    label: &str,
    section: &'static str,
    settings: &Settings,
    report: &mut Report,
) -> Result<Load, String> {
    let mut args = loadgen::timed("note", url, concurrency, settings.load_secs, 1);
    args.extend(["--size-bytes".into(), SIZE_BYTES.into()]);
    if etcd {
        args.push("--etcd".into());
    }
    let (result, command) = loadgen::run(&args, label);
    report.command(section, command);
    result
}
