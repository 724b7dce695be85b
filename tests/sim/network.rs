//! The simulated network: messages wait in flight for a random delay (which also
//! reorders them), may be dropped or duplicated, and never cross a cut link.

use raftlb::raft::{Message, NodeId};

use super::{Cluster, InFlight};

impl Cluster {
    /// Cuts `id` off from every other node, both ways.
    pub fn isolate(&mut self, id: NodeId) {
        for other in self.ids() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    /// Splits the cluster into two sides that cannot talk.
    pub fn partition(&mut self, side: &[NodeId]) {
        for a in self.ids() {
            for b in self.ids() {
                if side.contains(&a) != side.contains(&b) {
                    self.cut.insert((a, b));
                }
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Puts a message on the wire, unless a cut, the filter or a fault drops it.
    pub fn send_to_network(&mut self, msg: Message) {
        if let Some(trace) = self.trace.as_mut() {
            trace.push(msg.clone());
        }
        // No such node (an answer to a forged sender): nowhere to deliver it.
        let known = (1..=self.nodes.len() as NodeId).contains(&msg.to);
        if !known
            || self.cut.contains(&(msg.from, msg.to))
            || self.filter.as_ref().is_some_and(|f| !f(&msg))
        {
            return;
        }
        let f = self.faults.clone();
        if self.rng.chance(f.drop_per_mille, 1000) {
            self.stats.dropped += 1;
            return;
        }
        let copies = if self.rng.chance(f.duplicate_per_mille, 1000) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let deliver_at = self.now + self.rng.range(0, f.max_delay_ticks + 1);
            let order = self.next_order;
            self.next_order += 1;
            self.network.push(InFlight {
                deliver_at,
                order,
                msg: msg.clone(),
            });
        }
    }

    pub(super) fn deliver_due(&mut self) {
        let now = self.now;
        let mut due: Vec<InFlight> = Vec::new();
        let mut later = Vec::with_capacity(self.network.len());
        for m in self.network.drain(..) {
            if m.deliver_at <= now {
                due.push(m);
            } else {
                later.push(m);
            }
        }
        self.network = later;
        due.sort_by_key(|m| (m.deliver_at, m.order));
        for m in due {
            let to = m.msg.to;
            if !self.is_up(to) || self.cut.contains(&(m.msg.from, to)) {
                continue;
            }
            self.stats.delivered += 1;
            self.raft_mut(to).step(m.msg);
            self.process_ready(to);
            self.after_step();
        }
    }
}
