//! The nemesis: every second or so it undoes some of what it did and does one
//! more fault, never leaving more voters down (killed, paused, cut off, or
//! back with a lost disk) than leaves a majority of the voters up. Faults come
//! in shuffled rounds, so a short run still sees every kind. Whenever a fault
//! takes the leader away, the time until the remaining nodes agree on a new
//! one is a failover; a leader that was paused or cut off must step down once
//! it is back. Membership changes (`members`) are among the faults: the
//! voters go between three and five, and the nodes are the members of the
//! configuration in force, which the nemesis reads back after every change.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use raftlb::raft::Rng;

use crate::hostnet::{Link, Net};
use crate::netfault::NetFaults;
use crate::powerfs::Disks;
use crate::support::Cluster;
use crate::watch::Watch;

mod links;
pub mod members;
pub mod operator;

/// How many of `voters` voters may be down at once: the others are a majority.
pub fn down_budget(voters: usize) -> usize {
    voters.saturating_sub(1) / 2
}
/// Time between two steps, in ms.
const STEP_MS: (u64, u64) = (700, 1_500);
/// How long a paused or cut-off leader stays away once a new leader is up, in
/// ms: long enough for the clients to send it requests it must not answer
/// wrongly.
const HOLD_MS: (u64, u64) = (100, 800);
/// Loss applied to every node's Raft datagrams for one step, in percent.
const LOSS_PERCENT: (u64, u64) = (10, 40);
/// A liveness bound, far above the few hundred ms a failover takes: with two
/// nodes down at most, a cluster that has no leader after this is broken.
const FAILOVER_LIMIT: Duration = Duration::from_secs(10);
/// How long a leader back from a pause or a partition may go on leading its
/// old term.
const STEP_DOWN_LIMIT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    KillLeader,
    KillNode,
    PauseLeader,
    KillWorker,
    IsolateLeader,
    SplitLeader,
    Loss,
    /// On hosts only, per link: a follower's packets to the leader dropped.
    FollowerUnheard,
    /// The leader hears every node, no node hears the leader.
    LeaderUnheard,
    /// A follower cut off from the leader, both ways, and from no one else.
    CutFromLeader,
    /// The leader's links to two followers down and up every 200 ms.
    Flapping,
    /// A voter removed (`POST /admin/member` remove), then stopped.
    RemoveMember,
    /// A node that is no member (a spare, or one removed earlier) added.
    AddMember,
    /// A voter SIGKILLed, its disk wiped, and a spare put in its place (replace).
    ReplaceNode,
    /// A voter SIGKILLed and restarted with an empty data dir under its id: it
    /// does not count until it is removed and added back (the repair).
    LoseDisk,
    /// The leader SIGKILLed while an add or a replace is on its way (part of
    /// those two, never drawn alone).
    KillLeaderMidChange,
}

/// Where network faults are done: by port, on loopback in a namespace of the
/// test's own, or per link between hosts (CHAOS_HOSTS=1), where a cut link
/// drops everything, HTTP forwards between nodes too.
#[derive(Clone, Copy)]
pub enum Network<'a> {
    Loopback(&'a NetFaults),
    Hosts(&'a Net),
}

impl Fault {
    fn is_membership(self) -> bool {
        matches!(
            self,
            Fault::RemoveMember
                | Fault::AddMember
                | Fault::ReplaceNode
                | Fault::LoseDisk
                | Fault::KillLeaderMidChange
        )
    }

    pub fn describe(self) -> &'static str {
        match self {
            Fault::KillLeader => "SIGKILL of the leader",
            Fault::KillNode => "SIGKILL of a random node",
            Fault::PauseLeader => "SIGSTOP of the leader",
            Fault::KillWorker => "SIGKILL of a worker",
            Fault::IsolateLeader => "leader cut off (no Raft datagrams)",
            Fault::SplitLeader => "leader and one follower split from the other three",
            Fault::Loss => "random datagram loss on every node",
            Fault::FollowerUnheard => "a follower's packets to the leader dropped (one way)",
            Fault::LeaderUnheard => "nobody hears the leader, it hears everyone",
            Fault::CutFromLeader => "a follower cut off from the leader alone",
            Fault::Flapping => "the leader's links to two followers flapping",
            Fault::RemoveMember => "a voter removed from the configuration",
            Fault::AddMember => "a node added to the configuration",
            Fault::ReplaceNode => "a voter SIGKILLed, its disk wiped, replaced by a spare",
            Fault::LoseDisk => "a voter back with an empty data dir under its id",
            Fault::KillLeaderMidChange => "SIGKILL of the leader during a membership change",
        }
    }
}

/// One failover: which fault caused it and how long until the remaining nodes
/// agreed on a new leader.
pub struct Failover {
    pub fault: Fault,
    pub took: Duration,
}

/// What the nemesis did.
#[derive(Default)]
pub struct Report {
    /// How many times each fault was done.
    pub done: BTreeMap<Fault, usize>,
    pub failovers: Vec<Failover>,
    /// Leaders that were paused or cut off, replaced, and stepped down once back.
    pub stepped_down: usize,
    /// When everything had been undone, from the origin.
    pub healed_at: Duration,
    /// Kills that cut the node's power too (only with PowerFs disks).
    pub power_cuts: usize,
    /// The membership changes asked for, by operation and answer.
    pub members: operator::MemberTally,
    /// The voters of the configuration in force after the heal.
    pub final_voters: Vec<usize>,
}

pub struct Nemesis<'a> {
    cluster: &'a mut Cluster,
    watch: &'a Watch,
    net: Option<Network<'a>>,
    /// The nodes' disks when they are PowerFs: a killed node's power is cut.
    disks: Option<&'a Disks>,
    rng: Rng,
    origin: Instant,
    net_fault_on: bool,
    report: Report,
    /// The voters of the configuration in force, as last read from the leader.
    voters: Vec<usize>,
    /// The voter that came back with an empty data dir and was not repaired
    /// yet (removed and added back): it counts as down. One at a time.
    lost: Option<usize>,
    /// When each node last became a voter: its disk is lost only once the
    /// leader has surely bound it (see `members::BOUND_AFTER`).
    joined: Vec<Instant>,
    /// When the faults end (from the origin): a membership change waits for
    /// its answer only until shortly after.
    until: Duration,
}

impl<'a> Nemesis<'a> {
    pub fn new(
        cluster: &'a mut Cluster,
        watch: &'a Watch,
        net: Option<Network<'a>>,
        disks: Option<&'a Disks>,
        seed: u64,
        origin: Instant,
    ) -> Nemesis<'a> {
        Nemesis {
            watch,
            net,
            disks,
            rng: Rng::new(seed),
            origin,
            net_fault_on: false,
            report: Report::default(),
            voters: (0..cluster.options.nodes).collect(),
            lost: None,
            joined: vec![Instant::now(); cluster.ids.len()],
            until: Duration::ZERO,
            cluster,
        }
        .with_members()
    }

    /// Tells the clients the members to send to.
    fn with_members(self) -> Self {
        self.watch.set_members(&self.voters);
        self
    }

    /// Faults until `until` (from the origin), then undoes every one of them.
    pub fn run(mut self, until: Duration) -> Report {
        self.until = until;
        let mut round: Vec<Fault> = Vec::new();
        loop {
            std::thread::sleep(Duration::from_millis(self.rng.range(STEP_MS.0, STEP_MS.1)));
            if self.origin.elapsed() >= until {
                break;
            }
            self.undo_some();
            if round.is_empty() {
                round = self.round();
            }
            let fault = round.pop().expect("a round is never empty");
            self.inject(fault);
        }
        self.heal();
        self.report.healed_at = self.origin.elapsed();
        self.report.final_voters = self.voters.clone();
        self.report
    }

    /// Every kind of fault once, in a random order (popped from the back).
    fn round(&mut self) -> Vec<Fault> {
        let mut faults = vec![
            Fault::KillLeader,
            Fault::KillNode,
            Fault::PauseLeader,
            Fault::KillWorker,
        ];
        if self.net.is_some() {
            faults.extend([Fault::IsolateLeader, Fault::SplitLeader, Fault::Loss]);
        }
        if let Some(Network::Hosts(_)) = self.net {
            faults.extend([
                Fault::FollowerUnheard,
                Fault::LeaderUnheard,
                Fault::CutFromLeader,
                Fault::Flapping,
            ]);
        }
        faults.extend([
            Fault::RemoveMember,
            Fault::AddMember,
            Fault::ReplaceNode,
            Fault::LoseDisk,
        ]);
        for i in (1..faults.len()).rev() {
            faults.swap(i, self.rng.range(0, i as u64 + 1) as usize);
        }
        faults
    }

    fn say(&self, text: &str) {
        let t = self.origin.elapsed().as_secs_f64();
        eprintln!("chaos: {t:7.3} s  {text}");
    }

    /// The voters whose process is not running.
    fn killed(&self) -> Vec<usize> {
        (self.voters.iter().copied())
            .filter(|i| self.cluster.nodes[*i].is_none())
            .collect()
    }

    /// The voters whose process runs (a lost disk's included).
    fn live(&self) -> Vec<usize> {
        (self.voters.iter().copied())
            .filter(|i| self.cluster.nodes[*i].is_some())
            .collect()
    }

    /// The voters that do not count now: killed, or back with a lost disk.
    fn down(&self) -> usize {
        let lost_running = self.lost.is_some_and(|i| self.cluster.nodes[i].is_some());
        self.killed().len() + usize::from(lost_running)
    }

    fn id(&self, i: usize) -> &str {
        &self.cluster.ids[i]
    }

    /// The start of a step: the network heals, dead workers come back, a
    /// killed voter is restarted (always when as many are down as may be,
    /// else on a coin), and a lost disk is repaired on a coin.
    fn undo_some(&mut self) {
        self.clear_net();
        self.restart_workers();
        let killed = self.killed();
        let full = self.down() >= down_budget(self.voters.len());
        if !killed.is_empty() && (full || self.rng.chance(1, 2)) {
            let node = killed[self.rng.range(0, killed.len() as u64) as usize];
            self.cluster.restart_node(node);
            self.say(&format!(
                "node {} restarted from its data dir",
                self.id(node)
            ));
        }
        if self.lost.is_some() && self.rng.chance(1, 3) {
            self.repair();
        }
    }

    /// Undoes everything: the end of the faults. A lost disk is repaired, and
    /// every voter of the configuration in force runs.
    fn heal(&mut self) {
        self.clear_net();
        self.restart_workers();
        for node in self.killed() {
            self.cluster.restart_node(node);
        }
        for _ in 0..members::REPAIR_TRIES {
            if self.lost.is_none() {
                break;
            }
            self.repair();
        }
        self.reconcile();
        for node in self.killed() {
            self.cluster.restart_node(node);
        }
        let voters: Vec<&str> = self.voters.iter().map(|i| self.id(*i)).collect();
        self.say(&format!(
            "healed: every voter ({}) and worker runs, the network is whole",
            voters.join(" ")
        ));
    }

    fn restart_workers(&mut self) {
        for w in 0..self.cluster.workers.len() {
            if self.cluster.workers[w].is_none() {
                self.cluster.restart_worker(w);
                self.say(&format!("worker {w} restarted"));
            }
        }
    }

    fn clear_net(&mut self) {
        if let (true, Some(net)) = (self.net_fault_on, self.net) {
            let cleared = match net {
                Network::Loopback(faults) => faults.clear(),
                Network::Hosts(hosts) => {
                    hosts.heal_all();
                    Ok(())
                }
            };
            if let Err(e) = cleared {
                self.watch
                    .violation(format!("could not heal the network: {e}"));
            }
            self.net_fault_on = false;
            self.say("network healed");
        }
    }

    /// The leader every live node agrees on, waiting for one if need be.
    fn leader(&mut self) -> Option<(usize, u64)> {
        let mut live = self.live();
        let mut found = (self.watch).await_new_leader(None, &live, Instant::now(), FAILOVER_LIMIT);
        // A change the operator stopped waiting for (it waits less than the
        // node works on one) may have committed since: then a node it still
        // counts may be no member, and rightly hears no leader. Follow the
        // configuration a leader shows and wait again for its live voters
        // (chaos seed 1796368170155291010: B, replaced 32 s after the
        // operator gave up, was asked for the leader it would never hear).
        if found.is_none() {
            let shown = self.shown_configuration().map(|(_, _, voters, _)| voters);
            let mut believed = self.voters.clone();
            believed.sort_unstable();
            if shown.is_some_and(|voters| voters != believed) {
                self.say("the configuration changed after the operator stopped waiting: read back");
                self.reconcile();
                live = self.live();
                found = (self.watch).await_new_leader(None, &live, Instant::now(), FAILOVER_LIMIT);
            }
        }
        if let Some((leader, term, _)) = found {
            return Some((leader, term));
        }
        self.watch.violation(format!(
            "the live nodes {:?} agreed on no leader for {FAILOVER_LIMIT:?}",
            live.iter().map(|i| self.id(*i)).collect::<Vec<_>>()
        ));
        None
    }

    fn inject(&mut self, fault: Fault) {
        if fault.is_membership() {
            return self.member_fault(fault);
        }
        let down = self.down();
        let budget = down_budget(self.voters.len());
        let leader_fault = !matches!(fault, Fault::KillNode | Fault::KillWorker | Fault::Loss);
        // A split and a flap take two nodes from the majority; the others one.
        let takes = match fault {
            Fault::SplitLeader | Fault::Flapping => 2,
            _ => 1,
        };
        if fault != Fault::KillWorker && fault != Fault::Loss && down + takes > budget {
            self.say(&format!(
                "skipped: {} ({down} of {} voters down already, {budget} may be)",
                fault.describe(),
                self.voters.len()
            ));
            return;
        }
        let (leader, term) = match leader_fault {
            true => match self.leader() {
                Some(found) => found,
                None => return,
            },
            false => (usize::MAX, 0),
        };
        *self.report.done.entry(fault).or_default() += 1;
        match fault {
            Fault::KillLeader => {
                let started = Instant::now();
                self.kill(leader);
                self.failover(fault, leader, term, &self.live(), started);
            }
            Fault::KillNode => {
                let live = self.live();
                let node = live[self.rng.range(0, live.len() as u64) as usize];
                let led = self.watch.agreed_leader(&live).map(|(l, t)| (l == node, t));
                let started = Instant::now();
                self.kill(node);
                match led {
                    Some((true, term)) => self.failover(fault, node, term, &self.live(), started),
                    _ => self.say(&format!("node {} killed", self.id(node))),
                }
            }
            Fault::PauseLeader => {
                let others: Vec<usize> = self.live().into_iter().filter(|i| *i != leader).collect();
                let node = self.cluster.nodes[leader]
                    .as_ref()
                    .expect("the leader is live");
                let started = Instant::now();
                node.signal("STOP");
                self.failover(fault, leader, term, &others, started);
                self.hold();
                let node = self.cluster.nodes[leader]
                    .as_ref()
                    .expect("a paused node stays");
                node.signal("CONT");
                self.await_step_down(leader, term, "woke up");
            }
            Fault::KillWorker => {
                let running: Vec<usize> = (0..self.cluster.workers.len())
                    .filter(|w| self.cluster.workers[*w].is_some())
                    .collect();
                if running.len() > 1 {
                    let w = running[self.rng.range(0, running.len() as u64) as usize];
                    self.cluster.kill_worker(w);
                    self.say(&format!("worker {w} killed"));
                }
            }
            Fault::IsolateLeader | Fault::SplitLeader => {
                let live = self.live();
                let mut cut = vec![leader];
                if fault == Fault::SplitLeader {
                    let followers: Vec<usize> =
                        live.iter().copied().filter(|i| *i != leader).collect();
                    cut.push(followers[self.rng.range(0, followers.len() as u64) as usize]);
                }
                let rest: Vec<usize> = live.into_iter().filter(|i| !cut.contains(i)).collect();
                let port = |i: &usize| self.cluster.ports[*i];
                let started = Instant::now();
                let applied = match self.net.expect("network faults only when available") {
                    Network::Loopback(net) if fault == Fault::IsolateLeader => {
                        net.isolate(port(&leader))
                    }
                    Network::Loopback(net) => net.split(
                        &cut.iter().map(port).collect::<Vec<_>>(),
                        &rest.iter().map(port).collect::<Vec<_>>(),
                    ),
                    Network::Hosts(_) => {
                        self.links_between(&cut, &rest)
                            .iter()
                            .for_each(Link::drop_all);
                        Ok(())
                    }
                };
                if let Err(e) = applied {
                    self.watch
                        .violation(format!("could not cut the network: {e}"));
                    return;
                }
                self.net_fault_on = true;
                self.failover(fault, leader, term, &rest, started);
                self.hold();
                self.clear_net();
                self.await_step_down(leader, term, "was reachable again");
            }
            Fault::Loss => {
                let percent = self.rng.range(LOSS_PERCENT.0, LOSS_PERCENT.1 + 1);
                let added = match self.net.expect("network faults only when available") {
                    Network::Loopback(net) => net.loss(&self.cluster.ports, percent),
                    Network::Hosts(net) => {
                        let ids = &self.cluster.ids;
                        for (a, b) in ids.iter().flat_map(|a| ids.iter().map(move |b| (a, b))) {
                            if a != b {
                                net.link(a, b).loss(percent as u32);
                            }
                        }
                        Ok(())
                    }
                };
                match added {
                    Ok(()) => {
                        self.net_fault_on = true;
                        self.say(&format!(
                            "{percent}% of Raft datagrams dropped until the next step"
                        ));
                    }
                    Err(e) => self.watch.violation(format!("could not add loss: {e}")),
                }
            }
            Fault::FollowerUnheard
            | Fault::LeaderUnheard
            | Fault::CutFromLeader
            | Fault::Flapping => self.link_fault(fault, leader, term),
            Fault::RemoveMember
            | Fault::AddMember
            | Fault::ReplaceNode
            | Fault::LoseDisk
            | Fault::KillLeaderMidChange => {
                unreachable!("membership faults return above")
            }
        }
    }

    /// SIGKILLs node i and, when its disk is a PowerFs, cuts its power.
    fn kill(&mut self, i: usize) {
        self.cluster.kill_node(i);
        if let Some(disks) = self.disks.filter(|d| i < d.disks.len()) {
            let cut = disks.cut_power(&[i]);
            self.report.power_cuts += 1;
            self.say(&format!(
                "power cut on node {}: {} unsynced bytes and {} unsynced files dropped",
                self.id(i),
                cut.bytes,
                cut.inodes
            ));
        }
    }

    /// Waits for `among` to agree on a leader other than `old`, records the
    /// failover, or calls it a violation after [`FAILOVER_LIMIT`].
    fn failover(&mut self, fault: Fault, old: usize, term: u64, among: &[usize], started: Instant) {
        let old_id = self.id(old).to_string();
        match self
            .watch
            .await_new_leader(Some(old), among, started, FAILOVER_LIMIT)
        {
            Some((new, _, took)) => {
                self.say(&format!(
                    "{}: {old_id} (term {term}) -> new leader {} after {} ms",
                    fault.describe(),
                    self.id(new),
                    took.as_millis()
                ));
                self.report.failovers.push(Failover { fault, took });
            }
            None => self.watch.violation(format!(
                "{} ({old_id}, term {term}): no new leader among {:?} within {FAILOVER_LIMIT:?}",
                fault.describe(),
                among.iter().map(|i| self.id(*i)).collect::<Vec<_>>()
            )),
        }
    }

    fn hold(&mut self) {
        std::thread::sleep(Duration::from_millis(self.rng.range(HOLD_MS.0, HOLD_MS.1)));
    }

    /// A leader of `term` that was away must learn of the newer term (or at
    /// least stop leading) within [`STEP_DOWN_LIMIT`] of coming back.
    fn await_step_down(&mut self, node: usize, term: u64, back: &str) {
        let start = Instant::now();
        while start.elapsed() < STEP_DOWN_LIMIT {
            if let Some(s) = self.watch.status(node) {
                if s.term > term || s.role != "leader" {
                    self.report.stepped_down += 1;
                    self.say(&format!(
                        "old leader {} {back} and stepped down after {} ms (now {} in term {})",
                        self.id(node),
                        start.elapsed().as_millis(),
                        s.role,
                        s.term
                    ));
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.watch.violation(format!(
            "old leader {} of term {term} {back} and still led that term {STEP_DOWN_LIMIT:?} later",
            self.id(node)
        ));
    }
}
