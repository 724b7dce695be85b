//! The nemesis's membership changes, done as an operator does them: a signed
//! `POST /admin/member` (as `raftlb member` sends it) to a random running
//! voter, which forwards it to the leader when it does not lead. A voter is
//! removed (and stopped), a node that is no member is added (a spare, or one
//! removed earlier, its old data dir kept or wiped), a SIGKILLed voter whose
//! disk is gone is replaced by a spare, and a voter comes back with an empty
//! data dir under its id: that one does not count until it has been removed
//! and added back, which the nemesis does before any other change (with three
//! voters it replaces it instead, as three is the floor).
//!
//! The voters stay between three and five; a change is only asked when every
//! configuration on its way (a replace removes the old node before the new
//! one votes) keeps a majority of voters up, restarting killed voters first
//! when that makes it so. After each change the configuration in force is
//! read back from the leader: a change cut short (503, no answer) may have
//! left a learner, which is removed, and a node that is no member any more is
//! stopped. Sometimes a second operator sends the same change while the first
//! is on its way: it must be refused (409 while the first is pending, 400 once
//! it is done), never done twice.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{down_budget, Failover, Fault, Nemesis, FAILOVER_LIMIT};
use crate::support::{post_member, send_signal, Cluster};

/// The spare nodes' ids: slots (and hosts) made at the start, no member.
pub const SPARES: [&str; 2] = ["F", "G"];
/// The voters are kept between these.
const VOTERS_MIN: usize = 3;
const VOTERS_MAX: usize = 5;
/// A client-side bound on one change (the node's own is 50 s): a change in a
/// healthy cluster takes about a second, a catch-up by snapshot included.
const CHANGE_LIMIT: Duration = Duration::from_secs(20);
/// A voter's disk is lost only this long after it joined: by then the leader
/// has bound its incarnation (it does within a heartbeat or two), which is
/// what makes the empty node not count (README: a disk lost before the
/// binding is not covered).
const BOUND_AFTER: Duration = Duration::from_secs(3);
/// How many times the end of the run tries to repair a lost disk, and how many
/// times a leftover learner's removal is asked.
pub const REPAIR_TRIES: usize = 3;
const LEARNER_TRIES: usize = 3;
/// How long after the first operator a second one sends the same change, or
/// the leader is SIGKILLed, in ms: changes here commit in tens of ms.
/// At least 2 ms: a change signed in the same ms is the same body, which
/// the node refuses as a replay (401), rightly.
const SECOND_MS: (u64, u64) = (2, 60);

/// The answers to the changes of one operation.
#[derive(Default, Clone, Copy)]
pub struct Answers {
    /// 200: every step committed.
    pub done: usize,
    /// 409: another change was pending.
    pub busy: usize,
    /// Another 4xx (already a member, not a member).
    pub refused: usize,
    /// 503 (no leader, cut short midway) or no answer in time: the
    /// configuration is read back.
    pub unsure: usize,
}

impl Answers {
    fn count(&mut self, answer: Option<u16>) {
        match answer {
            Some(200) => self.done += 1,
            Some(409) => self.busy += 1,
            Some(400..=499) => self.refused += 1,
            _ => self.unsure += 1,
        }
    }
}

/// Every membership change asked, by what was asked ("remove", "add back
/// after a lost disk", "second operator: add", ...).
#[derive(Default)]
pub struct MemberTally {
    pub by_kind: BTreeMap<String, Answers>,
}

impl MemberTally {
    fn count(&mut self, kind: &str, answer: Option<u16>) {
        self.by_kind
            .entry(kind.to_string())
            .or_default()
            .count(answer);
    }
}

/// What happens while a change is on its way.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Disturb {
    Nothing,
    /// The same change from a second operator, a moment later.
    SecondOperator,
    /// The leader (index, term) SIGKILLed a moment later.
    CrashLeader(usize, u64),
}

/// One change as JSON, for `POST /admin/member` (`at` is set when sent).
fn remove(id: &str) -> serde_json::Value {
    json!({"op": "remove", "id": id})
}

fn add(id: &str, addr: &str) -> serde_json::Value {
    json!({"op": "add", "id": id, "addr": addr})
}

fn replace(old: &str, id: &str, addr: &str) -> serde_json::Value {
    json!({"op": "replace", "old": old, "id": id, "addr": addr})
}

/// Empties a data dir, keeping the dir itself (a PowerFs mount point cannot go).
fn wipe(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let removed = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        removed.unwrap_or_else(|e| panic!("wipe {}: {e}", path.display()));
    }
}

/// Whether the request was never sent: the node could not be connected to
/// (e.g. restarted a moment ago and not listening yet).
fn not_connected(error: &ureq::Error) -> bool {
    use std::io::ErrorKind;
    match error {
        ureq::Error::ConnectionFailed | ureq::Error::Timeout(ureq::Timeout::Connect) => true,
        ureq::Error::Io(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionRefused | ErrorKind::HostUnreachable
        ),
        _ => false,
    }
}

/// One membership request to the first of `vias` that can be connected to,
/// as `raftlb member` goes on to another node when one cannot be (or knows
/// no leader yet): the node asked and its answer's status, None when none
/// came.
fn ask(
    cluster: &Cluster,
    vias: &[usize],
    change: &serde_json::Value,
) -> (usize, Option<u16>, String) {
    let mut tried = Vec::new();
    for &via in vias {
        match post_member(cluster, via, change.clone(), None, CHANGE_LIMIT) {
            // Nothing was started: a node restarted a moment ago knows no
            // leader yet.
            Ok((503, body)) if body.contains("no leader known") => {
                tried.push(format!("{}: {}", cluster.ids[via], body.trim()))
            }
            Ok((code, body)) => return (via, Some(code), body.trim().to_string()),
            Err(e) if not_connected(&e) => tried.push(format!("{}: {e}", cluster.ids[via])),
            Err(e) => return (via, None, format!("no answer: {e}")),
        }
    }
    let last = vias.last().copied().unwrap_or(0);
    (
        last,
        None,
        format!("no node could be connected to: {}", tried.join("; ")),
    )
}

impl Nemesis<'_> {
    /// Nodes that are no voter: spares, and nodes removed earlier.
    fn outsiders(&self) -> Vec<usize> {
        (0..self.cluster.ids.len())
            .filter(|i| !self.voters.contains(i))
            .collect()
    }

    fn pick(&mut self, from: &[usize]) -> Option<usize> {
        (!from.is_empty()).then(|| from[self.rng.range(0, from.len() as u64) as usize])
    }

    /// Whether `voters`, with `also_down` down too, keeps a majority up.
    fn fits(&self, voters: &[usize], also_down: &[usize]) -> bool {
        let down = (voters.iter())
            .filter(|&&i| {
                self.cluster.nodes[i].is_none() || self.lost == Some(i) || also_down.contains(&i)
            })
            .count();
        down <= down_budget(voters.len())
    }

    /// Whether each configuration in `steps` keeps a majority up (`also_down`
    /// goes down for the change), restarting the killed voters first when that
    /// is what it takes, as an operator mends the cluster before changing it.
    fn make_room(&mut self, steps: &[Vec<usize>], also_down: &[usize]) -> bool {
        let fit = |n: &Self| steps.iter().all(|v| n.fits(v, also_down));
        if fit(self) {
            return true;
        }
        for node in self.killed() {
            self.cluster.restart_node(node);
            self.say(&format!(
                "node {} restarted before a membership change",
                self.id(node)
            ));
        }
        fit(self)
    }

    fn without(&self, node: usize) -> Vec<usize> {
        (self.voters.iter().copied())
            .filter(|i| *i != node)
            .collect()
    }

    /// The membership faults; a lost disk is repaired first instead.
    pub(super) fn member_fault(&mut self, fault: Fault) {
        if self.lost.is_some() {
            self.say("a lost disk is repaired before any other change");
            return self.repair();
        }
        let skip = |n: &Self, why: &str| n.say(&format!("skipped: {} ({why})", fault.describe()));
        let voters = self.voters.clone();
        match fault {
            Fault::RemoveMember => {
                if voters.len() <= VOTERS_MIN {
                    return skip(self, "three voters is the floor");
                }
                let node = self.pick(&voters).expect("voters");
                if !self.make_room(&[self.without(node)], &[]) {
                    return skip(self, "no majority would be left up");
                }
                self.remove_member(node);
            }
            Fault::AddMember => {
                if voters.len() >= VOTERS_MAX {
                    return skip(self, "five voters is the ceiling");
                }
                let node = self.pick(&self.outsiders()).expect("seven slots");
                // A node removed earlier comes back with its old data dir, or
                // as a new machine.
                let fresh = self.rng.chance(1, 2);
                self.add_member(node, fresh, "add");
            }
            Fault::ReplaceNode => {
                let old = self.pick(&voters).expect("voters");
                let steps = [self.without(old)];
                if !self.make_room(&steps, &[old]) {
                    return skip(self, "no majority would be left up");
                }
                self.replace_node(old, Fault::ReplaceNode);
            }
            Fault::LoseDisk => {
                let bound: Vec<usize> = (self.live().into_iter())
                    .filter(|i| self.joined[*i].elapsed() >= BOUND_AFTER)
                    .collect();
                let Some(node) = self.pick(&bound) else {
                    return skip(self, "no running voter joined long enough ago");
                };
                if !self.make_room(&[voters], &[node]) {
                    return skip(self, "no majority would be left up");
                }
                self.lose_disk(node);
            }
            _ => unreachable!("not a membership fault"),
        }
        *self.report.done.entry(fault).or_default() += 1;
    }

    /// What disturbs an add or a replace on its way: with `steps` the
    /// configurations it goes through, a crash of the leader only when each
    /// keeps a majority up without it.
    fn disturbance(&mut self, steps: &[Vec<usize>]) -> Disturb {
        match self.rng.range(0, 12) {
            0..=3 => Disturb::SecondOperator,
            4..=6 => match self.watch.agreed_leader(&self.live()) {
                Some((leader, term)) if steps.iter().all(|v| self.fits(v, &[leader])) => {
                    Disturb::CrashLeader(leader, term)
                }
                _ => Disturb::Nothing,
            },
            _ => Disturb::Nothing,
        }
    }

    /// `change` through a random running voter; `disturb` may send the same
    /// change again from a second operator shortly after, or SIGKILL the
    /// leader while it is on its way. The first operator's answer.
    fn change(&mut self, kind: &str, change: serde_json::Value, disturb: Disturb) -> Option<u16> {
        let mut vias = self.live();
        if vias.is_empty() {
            return None;
        }
        for i in (1..vias.len()).rev() {
            vias.swap(i, self.rng.range(0, i as u64 + 1) as usize);
        }
        let mut others = vias.clone();
        others.rotate_left(self.rng.range(0, vias.len() as u64) as usize);
        let delay = Duration::from_millis(self.rng.range(SECOND_MS.0, SECOND_MS.1));
        let second = disturb == Disturb::SecondOperator;
        let crash = match disturb {
            Disturb::CrashLeader(leader, term) => {
                (self.cluster.nodes[leader].as_ref()).map(|p| (leader, term, p.pid()))
            }
            _ => None,
        };
        let cluster: &Cluster = self.cluster;
        let started = Instant::now();
        let ((via, code, body), again, crashed_at) = std::thread::scope(|scope| {
            let again = second.then(|| {
                scope.spawn(|| {
                    std::thread::sleep(delay);
                    ask(cluster, &others, &change)
                })
            });
            let crasher = crash.map(|(_, _, pid)| {
                scope.spawn(move || {
                    std::thread::sleep(delay);
                    send_signal(pid, "KILL");
                    Instant::now()
                })
            });
            let first = ask(cluster, &vias, &change);
            (
                first,
                again.map(|t| t.join().expect("the second operator")),
                crasher.map(|t| t.join().expect("the crasher")),
            )
        });
        if let (Some((leader, term, _)), Some(at)) = (crash, crashed_at) {
            self.crashed_mid_change(leader, term, at, delay);
        }
        self.report.members.count(kind, code);
        self.say(&format!(
            "member {kind} via {}: {} after {} ms: {}",
            self.id(via),
            code.map_or("no answer".into(), |c| c.to_string()),
            started.elapsed().as_millis(),
            body.lines().next().unwrap_or("")
        ));
        if let Some((other, code2, body2)) = again {
            self.report
                .members
                .count(&format!("same {kind} again (second operator)"), code2);
            self.say(&format!(
                "  the same change from a second operator via {} {} ms later: {}: {}",
                self.id(other),
                delay.as_millis(),
                code2.map_or("no answer".into(), |c| c.to_string()),
                body2.lines().next().unwrap_or("")
            ));
            if code == Some(200) && code2 == Some(200) {
                self.watch.violation(format!(
                    "member {kind} done twice: {change} was confirmed to both operators"
                ));
            }
        }
        code
    }

    /// The leader was SIGKILLed while a change was on its way: it is reaped
    /// (its power cut with PowerFs), and the running voters must name one new
    /// leader (maybe the node being added) within [`FAILOVER_LIMIT`].
    fn crashed_mid_change(&mut self, leader: usize, term: u64, at: Instant, delay: Duration) {
        let fault = Fault::KillLeaderMidChange;
        *self.report.done.entry(fault).or_default() += 1;
        self.kill(leader);
        // The voters from before the change: each hears from the leader,
        // while a node being added may not have been added at all.
        let among = self.live();
        let old_id = self.id(leader).to_string();
        while at.elapsed() < FAILOVER_LIMIT {
            let named: Option<Vec<String>> = (among.iter())
                .map(|&i| self.watch.status(i).and_then(|s| s.leader))
                .collect();
            let mut named = named.unwrap_or_default();
            named.dedup();
            if let [new] = &named[..] {
                if *new != old_id {
                    let took = at.elapsed();
                    self.say(&format!(
                        "{} ({} ms after the request): {old_id} (term {term}) -> new leader {new} after {} ms",
                        fault.describe(),
                        delay.as_millis(),
                        took.as_millis()
                    ));
                    self.report.failovers.push(Failover { fault, took });
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.watch.violation(format!(
            "{} ({old_id}, term {term}): the running nodes named no one new leader within {FAILOVER_LIMIT:?}",
            fault.describe()
        ));
    }

    /// Removes a voter (the leader too) and stops it once removed.
    fn remove_member(&mut self, node: usize) {
        let id = self.id(node).to_string();
        let led = self.leader().filter(|(l, _)| *l == node);
        let started = Instant::now();
        let code = self.change("remove", remove(&id), Disturb::Nothing);
        self.reconcile();
        if code == Some(200) {
            if let Some((old, term)) = led {
                let live = self.live();
                self.failover(Fault::RemoveMember, old, term, &live, started);
            }
        }
    }

    /// Starts `node` (a new machine when `fresh`: empty data dir) with a nodes
    /// file naming the voters and it, and adds it.
    fn add_member(&mut self, node: usize, fresh: bool, kind: &str) {
        if self.cluster.nodes[node].is_some() {
            self.cluster.kill_node(node);
        }
        if fresh {
            wipe(&self.cluster.data_dir(node));
        }
        self.start_outsider(node);
        let (id, addr) = (self.id(node).to_string(), self.cluster.node_addr(node));
        let mut grown = self.voters.clone();
        grown.push(node);
        let disturb = self.disturbance(&[self.voters.clone(), grown]);
        let code = self.change(kind, add(&id, &addr), disturb);
        self.reconcile();
        if code == Some(200) {
            self.joined[node] = Instant::now();
        }
    }

    /// Writes `nodes-ID.txt` (the voters and `node`) and starts `node` with it.
    fn start_outsider(&mut self, node: usize) {
        let mut listed = self.voters.clone();
        if !listed.contains(&node) {
            listed.push(node);
        }
        let text: String = (listed.iter())
            .map(|&i| format!("{} {}\n", self.id(i), self.cluster.node_addr(i)))
            .collect();
        let file = self.cluster.path(&format!("nodes-{}.txt", self.id(node)));
        std::fs::write(file, text).expect("write a nodes file");
        self.cluster.restart_node(node);
    }

    /// SIGKILLs voter `old` and wipes its disk (it goes to the spares, empty),
    /// then puts a new machine (an outsider, wiped) in its place.
    fn replace_node(&mut self, old: usize, fault: Fault) {
        let led = self.leader().filter(|(l, _)| *l == old);
        let started = Instant::now();
        if self.cluster.nodes[old].is_some() {
            self.kill(old);
        }
        wipe(&self.cluster.data_dir(old));
        self.say(&format!(
            "node {} SIGKILLed and its disk wiped, to be replaced",
            self.id(old)
        ));
        if self.lost == Some(old) {
            self.lost = None;
        }
        if let Some((_, term)) = led {
            let live = self.live();
            self.failover(fault, old, term, &live, started);
        }
        let outsiders: Vec<usize> = self.outsiders();
        let new = self.pick(&outsiders).expect("seven slots");
        if self.cluster.nodes[new].is_some() {
            self.cluster.kill_node(new);
        }
        wipe(&self.cluster.data_dir(new));
        self.start_outsider(new);
        let (old_id, id) = (self.id(old).to_string(), self.id(new).to_string());
        let addr = self.cluster.node_addr(new);
        let mut replaced = self.without(old);
        let steps = [self.voters.clone(), replaced.clone(), {
            replaced.push(new);
            replaced
        }];
        let disturb = match fault {
            Fault::ReplaceNode => self.disturbance(&steps),
            _ => Disturb::Nothing,
        };
        let kind = match fault {
            Fault::LoseDisk => "replace a lost disk (three voters)",
            _ => "replace",
        };
        let code = self.change(kind, replace(&old_id, &id, &addr), disturb);
        self.reconcile();
        if code == Some(200) {
            self.joined[new] = Instant::now();
        }
        if self.voters.contains(&old) {
            // Cut short before `old` left: a voter whose disk is gone.
            self.lost = Some(old);
            self.say(&format!(
                "node {old_id} is still a voter, with its disk gone: a lost disk"
            ));
        }
    }

    /// SIGKILLs `node`, wipes its data dir and starts it again under its id.
    fn lose_disk(&mut self, node: usize) {
        let led = self.leader().filter(|(l, _)| *l == node);
        let started = Instant::now();
        self.kill(node);
        wipe(&self.cluster.data_dir(node));
        if let Some((_, term)) = led {
            let live = self.live();
            self.failover(Fault::LoseDisk, node, term, &live, started);
        }
        self.start_outsider(node);
        self.lost = Some(node);
        self.say(&format!(
            "node {} back with an empty data dir under its id: it does not count until repaired",
            self.id(node)
        ));
    }

    /// Repairs the lost disk: removes the node and adds it back (a new
    /// incarnation, bound anew), or with three voters, replaces it.
    pub(super) fn repair(&mut self) {
        let Some(node) = self.lost else {
            return;
        };
        if self.voters.len() <= VOTERS_MIN {
            return self.replace_node(node, Fault::LoseDisk);
        }
        let id = self.id(node).to_string();
        if self.voters.contains(&node) {
            let code = self.change("remove a lost disk", remove(&id), Disturb::Nothing);
            self.reconcile();
            if code != Some(200) && self.voters.contains(&node) {
                return;
            }
        }
        self.lost = None;
        // Its empty data dir (a new incarnation) is kept: it joins again.
        self.add_member(node, false, "add back after a lost disk");
    }

    /// The leader's configuration (voters, learners), once the running nodes
    /// name one leader and it shows the same configuration twice in a row.
    fn read_configuration(&mut self) -> Option<(Vec<usize>, Vec<usize>)> {
        let start = Instant::now();
        let mut last = None;
        while start.elapsed() < FAILOVER_LIMIT {
            let running = self.cluster.live();
            let leader = (running.iter())
                .filter_map(|&i| self.watch.status(i))
                .filter(|s| s.role == "leader")
                .max_by_key(|s| s.term);
            let seen = leader.and_then(|s| {
                let mut voters = Vec::new();
                let mut learners = Vec::new();
                for n in &s.nodes {
                    let i = self.watch.index_of(&n.id)?;
                    match n.voter {
                        true => voters.push(i),
                        false => learners.push(i),
                    }
                }
                voters.sort_unstable();
                Some((s.id.clone(), s.term, voters, learners))
            });
            if seen.is_some() && seen == last {
                let (_, _, voters, learners) = seen.expect("seen");
                return Some((voters, learners));
            }
            last = seen;
            std::thread::sleep(Duration::from_millis(200));
        }
        self.watch.violation(format!(
            "no leader showed its configuration for {FAILOVER_LIMIT:?} after a membership change"
        ));
        None
    }

    /// Reads the configuration in force back: leftover learners are removed,
    /// running nodes that are no member are stopped, the voters noted.
    pub(super) fn reconcile(&mut self) {
        for _ in 0..LEARNER_TRIES {
            let Some((voters, learners)) = self.read_configuration() else {
                return;
            };
            self.voters = voters;
            self.watch.set_members(&self.voters);
            if self.lost.is_some_and(|l| !self.voters.contains(&l)) {
                self.lost = None;
            }
            for node in 0..self.cluster.ids.len() {
                let member = self.voters.contains(&node) || learners.contains(&node);
                if !member && self.cluster.nodes[node].is_some() {
                    self.cluster.kill_node(node);
                    self.say(&format!("node {} is no member: stopped", self.id(node)));
                }
            }
            let Some(&learner) = learners.first() else {
                return;
            };
            let id = self.id(learner).to_string();
            self.say(&format!("node {id} was left a learner: removed"));
            self.change("remove a leftover learner", remove(&id), Disturb::Nothing);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
