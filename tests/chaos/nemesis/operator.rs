//! How the nemesis asks for a membership change, as an operator does: a
//! signed `POST /admin/member` (as `raftlb member` sends it) to a random
//! running voter, which forwards it to the leader when it does not lead, going
//! on to another when one cannot be connected to. Sometimes a second operator
//! sends the same change while the first is on its way: it must be refused
//! (409 while the first is pending, 400 once it is done), never done twice; or
//! the leader is SIGKILLed meanwhile. After each change the configuration in
//! force is read back from the leader: a change cut short (503, no answer) may
//! have left a learner, which is removed, and a node that is no member any
//! more is stopped.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::members::remove;
use super::{Failover, Fault, Nemesis, FAILOVER_LIMIT};
use crate::support::membership::post_member;
use crate::support::{send_signal, Cluster};

/// Client-side bounds on one change (the node's own is 50 s): a change in a
/// healthy cluster takes well under a second here, a catch-up by snapshot
/// included. The wait ends at most [`CHANGE_AFTER_FAULTS`] after the faults
/// do (and lasts that long in the heal), so that the run keeps its length:
/// seed 1301's remove of a leader that then stopped leading went unanswered
/// for its full 20 s, and the faults overran the run.
const CHANGE_LIMIT: Duration = Duration::from_secs(20);
const CHANGE_AFTER_FAULTS: Duration = Duration::from_secs(2);
/// How many times a leftover learner's removal is asked.
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
    /// The longest wait for an answer (or for none).
    pub slowest: Duration,
}

impl Answers {
    fn count(&mut self, answer: Option<u16>, took: Duration) {
        self.slowest = self.slowest.max(took);
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
    fn count(&mut self, kind: &str, answer: Option<u16>, took: Duration) {
        self.by_kind
            .entry(kind.to_string())
            .or_default()
            .count(answer, took);
    }
}

/// What happens while a change is on its way.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Disturb {
    Nothing,
    /// The same change from a second operator, a moment later.
    SecondOperator,
    /// The leader (index, term) SIGKILLed a moment later.
    CrashLeader(usize, u64),
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
    limit: Duration,
    cluster: &Cluster,
    vias: &[usize],
    change: &serde_json::Value,
) -> (usize, Option<u16>, String) {
    let mut tried = Vec::new();
    for &via in vias {
        match post_member(cluster, via, change.clone(), None, limit) {
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
    /// What disturbs an add or a replace on its way: with `steps` the
    /// configurations it goes through, a crash of the leader only when each
    /// keeps a majority up without it.
    pub(super) fn disturbance(&mut self, steps: &[Vec<usize>]) -> Disturb {
        if self.origin.elapsed() >= self.until {
            return Disturb::Nothing; // the heal
        }
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
    pub(super) fn change(
        &mut self,
        kind: &str,
        change: serde_json::Value,
        disturb: Disturb,
    ) -> Option<u16> {
        // As an operator looks at `raftlb status` first: right after a fault
        // the nodes may be between leaders, and would all answer "no leader
        // known" (seeds 1301 and 2002).
        let _ = self.leader();
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
        let left = self.until.saturating_sub(self.origin.elapsed());
        let limit = (left + CHANGE_AFTER_FAULTS).min(CHANGE_LIMIT);
        let cluster: &Cluster = self.cluster;
        let started = Instant::now();
        let ((via, code, body), again, crashed_at) = std::thread::scope(|scope| {
            let again = second.then(|| {
                scope.spawn(|| {
                    std::thread::sleep(delay);
                    ask(limit, cluster, &others, &change)
                })
            });
            let crasher = crash.map(|(_, _, pid)| {
                scope.spawn(move || {
                    std::thread::sleep(delay);
                    send_signal(pid, "KILL");
                    Instant::now()
                })
            });
            let first = ask(limit, cluster, &vias, &change);
            (
                first,
                again.map(|t| t.join().expect("the second operator")),
                crasher.map(|t| t.join().expect("the crasher")),
            )
        });
        if let (Some((leader, term, _)), Some(at)) = (crash, crashed_at) {
            self.crashed_mid_change(leader, term, at, delay);
        }
        self.report.members.count(kind, code, started.elapsed());
        self.say(&format!(
            "member {kind} via {}: {} after {} ms: {}",
            self.id(via),
            code.map_or("no answer".into(), |c| c.to_string()),
            started.elapsed().as_millis(),
            body.lines().next().unwrap_or("")
        ));
        if let Some((other, code2, body2)) = again {
            self.report.members.count(
                &format!("same {kind} again (second operator)"),
                code2,
                started.elapsed(),
            );
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

    /// What the running node that leads in the highest term shows now: its
    /// id, term, voters (sorted) and learners; None while none leads.
    pub(super) fn shown_configuration(&self) -> Option<(String, u64, Vec<usize>, Vec<usize>)> {
        let running = self.cluster.live();
        let leader = (running.iter())
            .filter_map(|&i| self.watch.status(i))
            .filter(|s| s.role == "leader")
            .max_by_key(|s| s.term)?;
        let mut voters = Vec::new();
        let mut learners = Vec::new();
        for n in &leader.nodes {
            let i = self.watch.index_of(&n.id)?;
            match n.voter {
                true => voters.push(i),
                false => learners.push(i),
            }
        }
        voters.sort_unstable();
        Some((leader.id.clone(), leader.term, voters, learners))
    }

    /// The leader's configuration (voters, learners), once the running nodes
    /// name one leader and it shows the same configuration twice in a row.
    fn read_configuration(&mut self) -> Option<(Vec<usize>, Vec<usize>)> {
        let start = Instant::now();
        let mut last = None;
        while start.elapsed() < FAILOVER_LIMIT {
            let seen = self.shown_configuration();
            match seen {
                Some((_, _, voters, learners)) if seen == last => return Some((voters, learners)),
                _ => last = seen,
            }
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
