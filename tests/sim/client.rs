//! The simulated clients: they propose unique values, wait for them to be applied,
//! start linearizable reads and serve them once applied, and check after the
//! faults heal that the cluster makes progress and agrees on its history.

use raftlb::raft::NodeId;

use super::Cluster;

impl Cluster {
    /// Proposes a fresh unique value at `id`; returns it with its (index, term).
    pub fn propose_at(&mut self, id: NodeId) -> Option<(u64, u64, u64)> {
        let value = self.next_value;
        let (index, term) = self
            .raft_mut(id)
            .propose(value.to_le_bytes().to_vec())
            .ok()?;
        self.next_value += 1;
        self.oracle.proposed(id, index, term, value);
        self.process_ready(id);
        Some((value, index, term))
    }

    /// Proposes at the leader and runs until every live node the leader can reach
    /// applied it, proposing again when leadership moves (a transfer, a lost
    /// entry), all within `max_ticks`.
    pub fn commit_one(&mut self, max_ticks: u64) -> u64 {
        let deadline = self.now + max_ticks;
        while self.now < deadline {
            let Some(leader) = self.leader() else {
                self.tick();
                continue;
            };
            let Some((value, _, term)) = self.propose_at(leader) else {
                self.tick();
                continue;
            };
            let everywhere = |c: &Cluster| {
                c.reachable_from(leader)
                    .iter()
                    .filter(|&&id| c.is_member(id))
                    .all(|&id| c.node(id).sm.contains(value))
            };
            self.run_until(deadline - self.now, |c| {
                c.leader().is_some_and(|l| c.raft(l).term() != term) || everywhere(c)
            });
            if everywhere(self) {
                return value;
            }
        }
        panic!(
            "seed {}: no write committed everywhere within {max_ticks} ticks\n{}",
            self.seed,
            self.dump()
        )
    }

    /// Whether the current leader's configuration has `id` (every node counts
    /// while there is no leader). A node removed from the cluster gets no new
    /// entries, so the checks that every node applied a write skip it.
    pub fn is_member(&self, id: NodeId) -> bool {
        self.leader()
            .is_none_or(|l| self.raft(l).membership().contains(id))
    }

    /// The live nodes the current leader's configuration has.
    pub fn members_up(&self) -> Vec<NodeId> {
        self.up_ids()
            .into_iter()
            .filter(|&id| self.is_member(id))
            .collect()
    }

    /// Starts a linearizable read at `id`.
    pub fn read_at(&mut self, id: NodeId) -> u64 {
        let ctx = self.next_read_ctx;
        self.next_read_ctx += 1;
        self.oracle.read_started(ctx);
        self.raft_mut(id).read_index(ctx);
        self.process_ready(id);
        ctx
    }

    pub(super) fn serve_reads(&mut self, id: NodeId) {
        let node = self.node_mut(id);
        let applied = node.sm.applied_index;
        let ready: Vec<(u64, u64)> = node
            .pending_reads
            .iter()
            .filter(|(_, &i)| i <= applied)
            .map(|(&c, &i)| (c, i))
            .collect();
        for (ctx, index) in ready {
            self.node_mut(id).pending_reads.remove(&ctx);
            self.oracle.read_served(ctx, index, self.seed);
        }
    }

    /// After healing: a leader, a new proposal applied on every live node, and
    /// all of them agreeing on the whole applied history.
    /// Returns the ticks it took, from the call to the write applied everywhere.
    pub fn check_liveness(&mut self, max_ticks: u64) -> u64 {
        let started = self.now;
        let value = self.commit_one(max_ticks);
        let took = self.now - started;
        let target = self.oracle.committed_len();
        // At least that far, and all equally far: the leader may commit one
        // more entry of its own meanwhile (the bootstrap configuration or a
        // binding, written at a heartbeat).
        self.run_until(max_ticks, |c| {
            let up = c.members_up();
            let first = up.first().map(|&id| c.node(id).sm.applied_index);
            first.is_some_and(|f| f >= target)
                && up
                    .iter()
                    .all(|&id| Some(c.node(id).sm.applied_index) == first)
        })
        .unwrap_or_else(|| {
            panic!(
                "seed {}: nodes did not all apply up to {target}\n{}",
                self.seed,
                self.dump()
            )
        });
        let up = self.members_up();
        let reference = self.node(up[0]).sm.chain;
        for id in up {
            let sm = &self.node(id).sm;
            assert!(
                sm.contains(value),
                "seed {}: node {id} misses value {value}",
                self.seed
            );
            assert_eq!(
                sm.chain, reference,
                "seed {}: node {id} diverged",
                self.seed
            );
        }
        self.oracle.check_acknowledged(self, self.seed);
        took
    }
}
