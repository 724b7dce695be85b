//! Random faults and client load for the hunt: crashes (aimed at the leader too),
//! restarts, partitions, lost and duplicated messages, transfers, writes and reads,
//! each at a rate drawn per seed.

use std::collections::BTreeSet;

use raftlb::raft::{MembershipChange, NodeId, Rng, Role};

use super::Cluster;

/// Fault rates, each in parts per thousand per message or per tick.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    pub drop_per_mille: u64,
    pub duplicate_per_mille: u64,
    /// Messages are delayed 0..=max_delay_ticks ticks (which also reorders them).
    pub max_delay_ticks: u64,
    pub crash_per_mille: u64,
    /// Crashes aimed at the leader, the node whose loss tests the most.
    pub leader_crash_per_mille: u64,
    /// Crashes of a leader that has not yet committed an entry of its term: the
    /// window in which Figure 8's trouble starts.
    pub fresh_leader_crash_per_mille: u64,
    pub restart_per_mille: u64,
    pub partition_per_mille: u64,
    pub heal_per_mille: u64,
    pub propose_per_mille: u64,
    pub read_per_mille: u64,
    pub transfer_per_mille: u64,
    /// Configuration changes asked of the leader (add a learner, promote,
    /// remove, the leader included); 0 in the runs without spare nodes.
    pub member_change_per_mille: u64,
    /// A disk lost (at most `max_wipes` per run): the node restarts empty
    /// under its name, a new incarnation.
    pub wipe_per_mille: u64,
    pub max_wipes: u64,
}

impl Faults {
    /// Every kind of fault at rates that keep the cluster mostly alive.
    pub fn chaos(rng: &mut Rng) -> Faults {
        Faults {
            drop_per_mille: rng.range(0, 150),
            duplicate_per_mille: rng.range(0, 60),
            max_delay_ticks: rng.range(0, 8),
            crash_per_mille: rng.range(0, 8),
            leader_crash_per_mille: rng.range(0, 20),
            fresh_leader_crash_per_mille: rng.range(0, 100),
            restart_per_mille: rng.range(10, 60),
            partition_per_mille: rng.range(0, 8),
            heal_per_mille: rng.range(10, 50),
            propose_per_mille: rng.range(100, 700),
            read_per_mille: rng.range(0, 200),
            transfer_per_mille: rng.range(0, 3),
            member_change_per_mille: 0,
            wipe_per_mille: 0,
            max_wipes: 0,
        }
    }
}

impl Cluster {
    /// One tick of random faults and client load, as `faults` says.
    pub fn chaos_step(&mut self) {
        let f = self.faults.clone();
        let ids = self.ids();
        let pick = |rng: &mut Rng| ids[rng.range(0, ids.len() as u64) as usize];
        if self.rng.chance(f.crash_per_mille, 1000) {
            let id = pick(&mut self.rng);
            if self.is_up(id) {
                self.crash(id);
            }
        }
        let leaders: Vec<NodeId> = self
            .up_ids()
            .into_iter()
            .filter(|&id| self.raft(id).role() == Role::Leader)
            .collect();
        for id in leaders {
            let raft = self.raft(id);
            let fresh = raft.log().term(raft.commit_index()) != Some(raft.term());
            let rate = if fresh {
                f.fresh_leader_crash_per_mille
            } else {
                f.leader_crash_per_mille
            };
            if self.rng.chance(rate, 1000) {
                self.crash(id);
            }
        }
        if self.rng.chance(f.restart_per_mille, 1000) {
            let id = pick(&mut self.rng);
            if !self.is_up(id) {
                self.start(id);
            }
        }
        if self.rng.chance(f.partition_per_mille, 1000) {
            self.random_cut();
        }
        if self.rng.chance(f.heal_per_mille, 1000) {
            self.heal();
        }
        if self.rng.chance(f.propose_per_mille, 1000) {
            let id = pick(&mut self.rng);
            if self.is_up(id) {
                self.propose_at(id);
            }
        }
        if self.rng.chance(f.read_per_mille, 1000) {
            let id = pick(&mut self.rng);
            if self.is_up(id) {
                self.read_at(id);
            }
        }
        if self.stats.wipes < f.max_wipes && self.rng.chance(f.wipe_per_mille, 1000) {
            let id = pick(&mut self.rng);
            if self.may_lose_disk() {
                self.wipe(id);
            }
        }
        if self.rng.chance(f.member_change_per_mille, 1000) {
            self.random_member_change();
        }
        if self.rng.chance(f.transfer_per_mille, 1000) {
            if let Some(leader) = self.leader() {
                let target = pick(&mut self.rng);
                let _ = self.raft_mut(leader).transfer_leader(target);
                self.process_ready(leader);
            }
        }
        self.tick();
    }

    /// Asks the leader for one random configuration change: promote a learner
    /// or remove it, remove a member (the leader too), or add a node that is
    /// not a member (a spare or one removed before, started if it is down) as
    /// a learner. At least three voters are kept, so the faults' rates stay
    /// survivable. The core may refuse (a change pending, a learner behind).
    pub fn random_member_change(&mut self) {
        let Some(leader) = self.leader() else {
            return;
        };
        let membership = self.raft(leader).membership().clone();
        let learner = membership.members().iter().find(|m| !m.voter).map(|m| m.id);
        let outsiders: Vec<NodeId> = self
            .ids()
            .into_iter()
            .filter(|&id| !membership.contains(id))
            .collect();
        let voters: Vec<NodeId> = membership.voters().collect();
        // A member whose disk was lost (bound to an incarnation its data dir
        // no longer has) is repaired first, as an operator would: removed,
        // then added back by a later change. Changing anything else while it
        // cannot count can leave no majority at all (seed 9004055: a leader
        // removed itself while the only other holder of its entry was such a
        // node).
        let stale = membership
            .members()
            .iter()
            .find(|m| m.incarnation != 0 && m.incarnation != self.node(m.id).data_incarnation)
            .map(|m| m.id);
        if let Some(id) = stale {
            if self
                .raft_mut(leader)
                .propose_membership(MembershipChange::Remove(id))
                .is_ok()
            {
                self.stats.changes_proposed += 1;
            }
            self.process_ready(leader);
            return;
        }
        let change = match (learner, self.rng.range(0, 4)) {
            (Some(id), 0..=2) => MembershipChange::Promote(id),
            (Some(id), _) => MembershipChange::Remove(id),
            (None, 0) if voters.len() > 3 => {
                let id = voters[self.rng.range(0, voters.len() as u64) as usize];
                MembershipChange::Remove(id)
            }
            (None, _) if !outsiders.is_empty() => {
                let id = outsiders[self.rng.range(0, outsiders.len() as u64) as usize];
                if !self.is_up(id) {
                    self.start(id);
                }
                MembershipChange::AddLearner {
                    id,
                    name: id.to_string(),
                    addr: id.to_string(),
                }
            }
            _ => return,
        };
        if self.raft_mut(leader).propose_membership(change).is_ok() {
            self.stats.changes_proposed += 1;
        }
        self.process_ready(leader);
    }

    /// Whether a disk may be lost now: every member any node knows is up,
    /// every node ever started is up with a configuration in its log, the newest configuration any node has binds
    /// every voter, and no configuration change is pending anywhere. Not
    /// covered: a disk lost in a cluster's first moments, while some node's
    /// log holds no configuration yet (the core's joining rule lets such a
    /// candidate win a new cluster's first elections: see `Config::joining`)
    /// or before every voter is bound (unbound voters are joining: with one
    /// bound voter's disk lost, the bound ones may be too few to elect anyone:
    /// seed 705075846), or while a change is pending (a removed leader that
    /// alone holds its removal can leave no majority at all: seed 9007992).
    /// A voter whose log predates the lost node's binding is covered (seed
    /// 104532308): the empty node is joining and refuses it its vote.
    pub fn may_lose_disk(&self) -> bool {
        let up = self.up_ids();
        let mut members = BTreeSet::new();
        for &other in &up {
            let raft = self.raft(other);
            if raft.membership_index() > raft.commit_index() {
                return false;
            }
            members.extend(raft.membership().members().iter().map(|m| m.id));
        }
        let newest = up
            .iter()
            .map(|&id| self.raft(id))
            .max_by_key(|r| r.membership_index());
        let all_bound = newest.is_some_and(|r| {
            r.membership()
                .members()
                .iter()
                .all(|m| !m.voter || m.incarnation != 0)
        });
        // Every node ever started, member or not: a node removed (or down)
        // since before the first configuration reached it campaigns with
        // nodes.txt's, in which the empty node is joining and may vote for it
        // (seed 32002: two such nodes and the empty one elected a leader
        // without the committed entries).
        let started = self
            .ids()
            .into_iter()
            .filter(|&id| self.node(id).incarnation > 0);
        all_bound
            && members.iter().all(|&m| self.is_up(m))
            && started
                .collect::<Vec<_>>()
                .iter()
                .all(|&id| self.is_up(id) && self.raft(id).configured())
    }

    /// A random partition: a minority or majority side, or one-way cuts.
    fn random_cut(&mut self) {
        let ids = self.ids();
        match self.rng.range(0, 3) {
            0 => {
                let id = ids[self.rng.range(0, ids.len() as u64) as usize];
                self.isolate(id);
            }
            1 => {
                let side: Vec<NodeId> = ids
                    .iter()
                    .copied()
                    .filter(|_| self.rng.chance(1, 2))
                    .collect();
                self.partition(&side);
            }
            _ => {
                for _ in 0..self.rng.range(1, 4) {
                    let a = ids[self.rng.range(0, ids.len() as u64) as usize];
                    let b = ids[self.rng.range(0, ids.len() as u64) as usize];
                    if a != b {
                        self.cut.insert((a, b));
                    }
                }
            }
        }
    }

    /// Ends the faults: every node up, the network whole and reliable.
    pub fn heal_all(&mut self) {
        self.heal();
        self.faults = Faults::default();
        for id in self.ids() {
            if !self.is_up(id) {
                self.start(id);
            }
        }
    }
}
