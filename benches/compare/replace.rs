//! Replacing a dead member whose disk is gone, as an operator does it, on
//! raftlb and on etcd (the membership section's first rows).
//!
//! raftlb: the new node (new name, new port) is started with a nodes file
//! listing the members and it, and answers `/status`; then the real CLI,
//! `raftlb member replace OLD NEW HOST:PORT`, which adds NEW as a learner,
//! promotes it once caught up and removes OLD. Done when every live member's
//! `/status` shows NEW a voter, OLD gone and no learner left, and NEW has
//! applied what the leader had committed.
//!
//! etcd 3.4: `etcdctl member remove OLD`, `member add NEW --learner` (sent
//! again while etcd refuses it: its strict reconfiguration check answers
//! "unhealthy cluster" for a moment after a removal), the new etcd started
//! with `--initial-cluster-state existing`, caught up (its raftIndex reaches
//! the leader's), `member promote` (sent again until etcd finds the learner in
//! sync). Done when the new member answers a linearizable read.
//!
//! Both timed from the first command; the new raftlb node's start is before
//! it (the machine is up before it is added), etcd's is part of its steps.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::etcd::Etcd;
use crate::failover::{wait, Members};
use crate::membership::{under_load, Call, Span, Trial, SECTION};
use crate::support::{Cluster, CLIENT};
use crate::table::Report;

/// Bounds: a process to answer, a change to be done, a refused command retried.
const START_MAX: Duration = Duration::from_secs(30);
const CHANGE_MAX: Duration = Duration::from_secs(60);
/// How long `raftlb member replace` is run again after it failed (a node
/// that knew no leader at that moment answers 503).
const RERUN_MAX: Duration = Duration::from_secs(5);
/// Between tries of a command that was refused for now.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// The leader, then (a surviving member the clients go through, the follower
/// to replace), both followers, from the live members.
fn roles(live: &[usize], leader: usize) -> Result<(usize, usize), String> {
    let at = live
        .iter()
        .position(|&i| i == leader)
        .ok_or("leader not live")?;
    if live.len() < 3 {
        return Err(format!("{} live members, want at least 3", live.len()));
    }
    Ok((live[(at + 1) % live.len()], live[(at + 2) % live.len()]))
}

/// The through-a-member loops of `failover.rs`, their failures unexplained.
fn through(loops: Vec<(&'static str, crate::failover::Call)>) -> Vec<(&'static str, Call)> {
    loops
        .into_iter()
        .map(|(name, call)| {
            let call: Call = Box::new(move |agent, k| {
                call(agent, k)
                    .then_some(())
                    .ok_or_else(|| "no answer, or not 200".to_string())
            });
            (name, call)
        })
        .collect()
}

pub fn raftlb(cluster: &mut Cluster, report: &mut Report) -> Result<Trial, String> {
    let leader = wait("leader", START_MAX, || cluster.agreed_leader())?;
    let (via, old) = roles(&cluster.live(), leader)?;
    let loops = through(cluster.loops(via));
    let (mut shown, mut refusals) = (None, Vec::new());
    let trial = under_load(loops, || {
        replace_raftlb(cluster, old, &mut shown, &mut refusals)
    });
    if let Some(command) = shown.filter(|_| !report.commands.iter().any(|c| c.0 == SECTION)) {
        report.command(SECTION, command);
    }
    if !refusals.is_empty() {
        report.note(format!("raftlb replacement: {}", refusals.join(", ")));
    }
    trial
}

/// Writes a nodes file of `members`.
fn write_nodes(cluster: &Cluster, path: &Path, members: &[usize]) -> Result<(), String> {
    let text: String = members
        .iter()
        .map(|&i| format!("{} {}\n", cluster.ids[i], cluster.node_addr(i)))
        .collect();
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn replace_raftlb(
    cluster: &mut Cluster,
    old: usize,
    shown: &mut Option<String>,
    refusals: &mut Vec<String>,
) -> Result<Span, String> {
    let term = |c: &Cluster| c.agreed_leader().and_then(|l| c.status(l)).map(|s| s.term);
    let term_before = term(cluster);
    let disturbed = Instant::now();
    cluster.kill_node(old);
    let data = cluster.data_dir(old);
    std::fs::remove_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
    // The configuration still has the dead node until the change.
    let mut members = cluster.live();
    members.push(old);
    let old_id = cluster.ids[old].clone();
    let new_id = ((b'A' + cluster.ids.len() as u8) as char).to_string();
    let new = cluster.add_node_slot(&new_id);
    let listed: Vec<usize> = members.iter().copied().chain([new]).collect();
    write_nodes(
        cluster,
        &cluster.path(&format!("nodes-{new_id}.txt")),
        &listed,
    )?;
    let cli_nodes = cluster.path("nodes-cli.txt");
    write_nodes(cluster, &cli_nodes, &members)?;
    cluster.restart_node(new);
    wait("the new node to answer", START_MAX, || cluster.status(new))?;
    let addr = cluster.node_addr(new);
    let args = ["member", "replace", &old_id, &new_id, &addr];
    let key = cluster.key_file();
    *shown = Some(format!(
        "raftlb --nodes {} --key {key} {}   # after starting node {new_id}",
        cli_nodes.display(),
        args.join(" ")
    ));
    let started = Instant::now();
    let command = || {
        let out = Command::new(CLIENT)
            .arg("--nodes")
            .arg(&cli_nodes)
            .args(["--key", &key])
            .args(args)
            .output()
            .map_err(|e| format!("raftlb member replace: {e}"))?;
        let said = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
        let (stdout, stderr) = (said(&out.stdout), said(&out.stderr));
        match out.status.success() {
            true => Ok(stdout),
            false => Err(format!(
                "raftlb member replace: {}: {stdout}{stderr}",
                out.status
            )),
        }
    };
    // Sent once by design: a node that knows no leader at that moment
    // answers 503 and the operator runs it again, as this does (the notes
    // say so).
    let said = retry("raftlb member replace", refusals, RERUN_MAX, command);
    let command_ms = started.elapsed().as_millis();
    if let Err(e) = said {
        // Not a member: it would name no leader and stall the next trials.
        cluster.kill_node(new);
        return Err(e);
    }
    let what = format!("{new_id} a voter on every member in place of {old_id}, caught up");
    wait(&what, CHANGE_MAX, || replaced(cluster, &old_id, new))?;
    let ended = Instant::now();
    let detail = format!(
        "raftlb replaced {old_id} with {new_id}: command returned in {command_ms} ms ({}), done in {} ms, term {term_before:?} → {:?}",
        said.unwrap_or_default(),
        ended.duration_since(started).as_millis(),
        term(cluster)
    );
    Ok(Span {
        disturbed,
        started,
        ended,
        detail,
    })
}

/// Whether every live member shows `new` a voter, `old` gone and no learner,
/// and `new` has applied what the leader had committed.
fn replaced(cluster: &Cluster, old_id: &str, new: usize) -> Option<()> {
    let leader = cluster.agreed_leader()?;
    let target = cluster.status(leader)?.commit_index;
    let new_id = &cluster.ids[new];
    for i in cluster.live() {
        let nodes = cluster.status(i)?.nodes;
        let votes = nodes.iter().any(|n| &n.id == new_id && n.voter);
        let clean = nodes.iter().all(|n| n.voter && n.id != old_id);
        if !(votes && clean) {
            return None;
        }
    }
    (cluster.status(new)?.applied_index >= target).then_some(())
}

pub fn etcd(etcd: &mut Etcd, report: &mut Report) -> Result<Trial, String> {
    let leader = wait("etcd leader", START_MAX, || etcd.agreed_leader())?;
    let (via, old) = roles(&etcd.live(), leader)?;
    let loops = through(etcd.loops(via));
    let first = !report.commands.iter().any(|c| c.1.starts_with("etcdctl"));
    let mut refusals = Vec::new();
    let trial = under_load(loops, || replace_etcd(etcd, old, &mut refusals))?;
    if !refusals.is_empty() {
        report.note(format!("etcd replacement: {}", refusals.join(", ")));
    }
    if first {
        let steps = [
            "etcdctl --endpoints LIVE member remove OLD-ID",
            "etcdctl --endpoints LIVE member add mN --peer-urls=http://127.0.0.1:PORT --learner   # again while refused",
            "etcd --name mN … --initial-cluster LIVE+mN --initial-cluster-state existing",
            "etcdctl --endpoints LIVE member promote NEW-ID   # again until accepted",
        ];
        for step in steps {
            report.command(SECTION, step);
        }
    }
    Ok(trial)
}

/// Runs `step` until it succeeds (for at most `limit`); adds to `refusals`
/// how often it was refused, and the last reason.
fn retry<T>(
    what: &str,
    refusals: &mut Vec<String>,
    limit: Duration,
    mut step: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let start = Instant::now();
    let mut refused: Option<(u32, String)> = None;
    loop {
        match step() {
            Ok(v) => {
                if let Some((n, why)) = refused {
                    refusals.push(format!("{what} refused {n}× (the last: {why})"));
                }
                return Ok(v);
            }
            Err(e) if start.elapsed() > limit => return Err(format!("{what}: {e}")),
            Err(e) => refused = Some((refused.map_or(1, |(n, _)| n + 1), e)),
        }
        std::thread::sleep(RETRY_PAUSE);
    }
}

fn replace_etcd(etcd: &mut Etcd, old: usize, refusals: &mut Vec<String>) -> Result<Span, String> {
    let old_hex = etcd.hex_id(old).ok_or("the member to replace has no id")?;
    let disturbed = Instant::now();
    etcd.kill(old);
    let data = etcd.data_dir(old);
    std::fs::remove_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
    let started = Instant::now();
    retry("member remove", refusals, CHANGE_MAX, || {
        etcd.etcdctl(&["member", "remove", &old_hex])
    })?;
    let new = etcd.add_slot();
    let new_hex = retry("member add", refusals, CHANGE_MAX, || etcd.add_learner(new))?;
    etcd.restart(new)?;
    let caught_up = || {
        let leader = etcd.agreed_leader()?;
        let target = etcd.status(leader)?.raft_index;
        (etcd.status(new)?.raft_index >= target).then_some(())
    };
    wait("the new etcd member to catch up", CHANGE_MAX, caught_up)?;
    retry("member promote", refusals, CHANGE_MAX, || {
        etcd.etcdctl(&["member", "promote", &new_hex])
    })?;
    let serves = || etcd.linearizable_read(new).then_some(());
    wait("a linearizable read on the new member", CHANGE_MAX, serves)?;
    let ended = Instant::now();
    let detail = format!(
        "etcd replaced {} with {}: {} ms ({})",
        Etcd::name(old),
        Etcd::name(new),
        ended.duration_since(started).as_millis(),
        if refusals.is_empty() {
            "no command refused".to_string()
        } else {
            refusals.join(", ")
        }
    );
    Ok(Span {
        disturbed,
        started,
        ended,
        detail,
    })
}
