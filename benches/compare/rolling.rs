//! Rolling restarts, as `make rolling-restart` does one (scripts/cluster.sh),
//! on raftlb and on etcd: every live member in turn, the leader last, stopped
//! with SIGTERM (a raftlb leader hands leadership to its most up-to-date
//! follower first; etcd 3.4's does the same on a graceful stop), started
//! again on its data dir, and caught up before the next: an agreed leader,
//! and the member's log has reached what that leader had when first asked.
//!
//! The clients go to another node when one is down. raftlb's are the CLI's
//! failover, called as `raftlb note set` and `raftlb prime` call it (the
//! leader first for a write, moving on only when a node cannot be reached;
//! the next node on any failure for a prime), with the CLI's default
//! timeouts, over a nodes file of the members. etcd's put goes to the first
//! member that answers, in member order, with the same 5 s limit as
//! `raftlb note set`; an answer other than 200 is a failure.

use std::time::{Duration, Instant};

use raftlb::client::failover::FailoverError;
use raftlb::client::http::Timeouts;
use raftlb::client::{note, prime};
use raftlb::nodes::Nodes;

use crate::etcd::Etcd;
use crate::failover::{put_body, value, wait};
use crate::http;
use crate::membership::{under_load, Call, Span, Trial};
use crate::support::Cluster;
use crate::table::Report;

/// The CLI's defaults (bin/raftlb.rs): a note 5 s, a prime 30 s, a connection 1 s.
const NOTE_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(1),
    total: Duration::from_secs(5),
};
const PRIME_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(1),
    total: Duration::from_secs(30),
};
/// etcd's put: the same limit as a note.
const PUT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds: a leader, a stop, a catch-up.
const LEADER_MAX: Duration = Duration::from_secs(20);
const STOP_MAX: Duration = Duration::from_secs(10);
const CATCH_UP_MAX: Duration = Duration::from_secs(30);

/// The live members, the leader last.
fn order(live: Vec<usize>, leader: usize) -> Vec<usize> {
    let mut order: Vec<usize> = live.into_iter().filter(|&i| i != leader).collect();
    order.push(leader);
    order
}

/// The CLI's message for a failed call, every node's reason included.
fn describe(e: FailoverError) -> String {
    match e {
        FailoverError::AllFailed(failures) => {
            let reasons: Vec<String> = failures.iter().map(ToString::to_string).collect();
            format!("every node failed: {}", reasons.join("; "))
        }
        refused => refused.to_string(),
    }
}

/// A write loop and a prime loop with the CLI's failover over `cluster`'s live members.
fn cli_loops(cluster: &Cluster) -> Result<Vec<(&'static str, Call)>, String> {
    let path = cluster.path("nodes-rolling.txt");
    let text: String = (cluster.live().iter())
        .map(|&i| format!("{} {}\n", cluster.ids[i], cluster.node_addr(i)))
        .collect();
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    let nodes = Nodes::load(&path).map_err(|e| e.to_string())?;
    let (for_writes, for_primes) = (nodes.entries().to_vec(), nodes.entries().to_vec());
    let write: Call = Box::new(move |_, k| {
        note::set(&for_writes, &value(k), NOTE_TIMEOUTS)
            .map(|_| ())
            .map_err(describe)
    });
    let primes: Call = Box::new(move |_, _| {
        let answer = prime::prime(&for_primes, 100, PRIME_TIMEOUTS).map_err(describe)?;
        (answer.digits == "541")
            .then_some(())
            .ok_or_else(|| format!("p_100 answered {}", answer.digits))
    });
    Ok(vec![("writes", write), ("primes", primes)])
}

pub fn raftlb(cluster: &mut Cluster, report: &mut Report) -> Result<Trial, String> {
    let loops = cli_loops(cluster)?;
    let before = handovers(cluster).len();
    let trial = under_load(loops, || restart_raftlb(cluster))?;
    // The check that the leader handed over rather than died: its log says so.
    let said = handovers(cluster).split_off(before);
    report.note(format!(
        "raftlb rolling restart: {} leadership handover(s) in the nodes' logs{}",
        said.len(),
        said.first().map_or(String::new(), |l| format!(": \"{l}\""))
    ));
    Ok(trial)
}

/// The handover lines of every node log so far, oldest log first.
fn handovers(cluster: &Cluster) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(cluster.dir.path()) else {
        return Vec::new();
    };
    // node-<ID>.<N>.log, where N counts every process the cluster started.
    let mut logs: Vec<(usize, String, std::path::PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            let stem = name.strip_prefix("node-")?.strip_suffix(".log")?;
            let (id, n) = stem.rsplit_once('.')?;
            Some((n.parse().ok()?, id.to_string(), p))
        })
        .collect();
    logs.sort();
    logs.iter()
        .flat_map(|(_, id, p)| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<String> = text
                .lines()
                .filter_map(|l| l.split_once("stopping: handing leadership"))
                .map(|(_, rest)| format!("{id} handing leadership{rest}"))
                .collect();
            lines
        })
        .collect()
}

fn restart_raftlb(cluster: &mut Cluster) -> Result<Span, String> {
    let leader = wait("leader", LEADER_MAX, || cluster.agreed_leader())?;
    let order = order(cluster.live(), leader);
    let started = Instant::now();
    for &i in &order {
        let id = cluster.ids[i].clone();
        if cluster.stop_node(i, STOP_MAX).is_none() {
            return Err(format!(
                "node {id} did not stop within {STOP_MAX:?} of SIGTERM"
            ));
        }
        cluster.restart_node(i);
        caught_up(
            &format!("node {id} to catch up"),
            || {
                cluster
                    .status(cluster.agreed_leader()?)
                    .map(|s| s.commit_index)
            },
            || cluster.status(i).map(|s| s.applied_index),
        )?;
    }
    let ended = Instant::now();
    let after = cluster
        .agreed_leader()
        .map_or("none".into(), |l| cluster.ids[l].clone());
    let names: Vec<&str> = order.iter().map(|&i| cluster.ids[i].as_str()).collect();
    let detail = format!(
        "raftlb rolling restart {} (leader {} last; leader after: {after}): {} ms",
        names.join(" "),
        cluster.ids[leader],
        ended.duration_since(started).as_millis()
    );
    Ok(Span {
        disturbed: started,
        started,
        ended,
        detail,
    })
}

/// Waits (bounded) until `own` reaches what `leader` gave when first asked:
/// the restarted member holds what the cluster had when it came back.
fn caught_up(
    what: &str,
    mut leader: impl FnMut() -> Option<u64>,
    mut own: impl FnMut() -> Option<u64>,
) -> Result<(), String> {
    let mut target = None;
    wait(what, CATCH_UP_MAX, || {
        if target.is_none() {
            target = Some(leader()?);
        }
        (own()? >= target?).then_some(())
    })
}

/// A put loop that moves to the next member when one cannot be reached.
fn etcd_loops(etcd: &Etcd) -> Vec<(&'static str, Call)> {
    let urls: Vec<String> = (etcd.live().iter())
        .map(|&i| format!("{}/v3/kv/put", etcd.url(i)))
        .collect();
    let agent = http::agent(PUT_TIMEOUT);
    let write: Call = Box::new(move |_, k| {
        let body = put_body(k);
        for url in &urls {
            match http::send(&agent, "POST", url, body.as_bytes()) {
                Some((200, _)) => return Ok(()),
                Some((code, answer)) => return Err(format!("{url}: {code} {}", answer.trim())),
                None => continue,
            }
        }
        Err("no member answered".into())
    });
    vec![("writes", write)]
}

pub fn etcd(etcd: &mut Etcd) -> Result<Trial, String> {
    let loops = etcd_loops(etcd);
    under_load(loops, || restart_etcd(etcd))
}

fn restart_etcd(etcd: &mut Etcd) -> Result<Span, String> {
    let leader = wait("etcd leader", LEADER_MAX, || etcd.agreed_leader())?;
    let order = order(etcd.live(), leader);
    let started = Instant::now();
    for &i in &order {
        etcd.stop(i);
        etcd.restart(i)?;
        caught_up(
            &format!("etcd {} to catch up", Etcd::name(i)),
            || etcd.status(etcd.agreed_leader()?).map(|s| s.raft_index),
            || etcd.status(i).map(|s| s.raft_index),
        )?;
    }
    let ended = Instant::now();
    let detail = format!(
        "etcd rolling restart, leader {} last: {} ms",
        Etcd::name(leader),
        ended.duration_since(started).as_millis()
    );
    Ok(Span {
        disturbed: started,
        started,
        ended,
        detail,
    })
}
