//! The nemesis's per-link faults, on hosts only (CHAOS_HOSTS=1): one way, a
//! leader nobody hears, a follower cut off from the leader alone, flapping
//! links; each link is one direction between two hosts (`tests/hosts/net.rs`).

use std::time::{Duration, Instant};

use super::{Fault, Nemesis, Network, FAILOVER_LIMIT};
use crate::hostnet::Link;

/// How often a flapping link goes down (and up again), and for how long each time.
const FLAPS: usize = 4;
const FLAP_MS: u64 = 200;

impl<'a> Nemesis<'a> {
    /// The per-link faults of hosts. A leader nobody hears must be replaced
    /// and step down; under the others the nodes they spare must keep (or
    /// find) a leader they all name.
    pub(super) fn link_fault(&mut self, fault: Fault, leader: usize, term: u64) {
        let Some(Network::Hosts(net)) = self.net else {
            unreachable!("per-link faults only on hosts");
        };
        let live = self.live();
        let mut followers: Vec<usize> = live.iter().copied().filter(|i| *i != leader).collect();
        for i in (1..followers.len()).rev() {
            followers.swap(i, self.rng.range(0, i as u64 + 1) as usize);
        }
        let (l, f0) = (
            self.id(leader).to_string(),
            self.id(followers[0]).to_string(),
        );
        let started = Instant::now();
        let spared: Vec<usize> = match fault {
            Fault::FollowerUnheard => {
                net.link(&f0, &l).drop_all();
                live.iter()
                    .copied()
                    .filter(|i| *i != followers[0])
                    .collect()
            }
            Fault::CutFromLeader => {
                net.link(&f0, &l).drop_all();
                net.link(&l, &f0).drop_all();
                live.iter()
                    .copied()
                    .filter(|i| *i != followers[0])
                    .collect()
            }
            Fault::LeaderUnheard => {
                for f in &followers {
                    net.link(&l, self.id(*f)).drop_all();
                }
                self.net_fault_on = true;
                self.failover(fault, leader, term, &followers, started);
                self.hold();
                self.clear_net();
                self.await_step_down(leader, term, "was heard again");
                return;
            }
            _ => {
                let f1 = self.id(followers[1]).to_string();
                let links = [
                    net.link(&l, &f0),
                    net.link(&f0, &l),
                    net.link(&l, &f1),
                    net.link(&f1, &l),
                ];
                for _ in 0..FLAPS {
                    links.iter().for_each(Link::drop_all);
                    std::thread::sleep(Duration::from_millis(FLAP_MS));
                    links.iter().for_each(Link::heal);
                    std::thread::sleep(Duration::from_millis(FLAP_MS));
                }
                live
            }
        };
        self.net_fault_on = true;
        let found = (self.watch).await_new_leader(None, &spared, Instant::now(), FAILOVER_LIMIT);
        match found {
            Some((now, now_term, _)) => self.say(&format!(
                "{} ({l} led term {term}, {f0} first follower): {:?} name {} (term {now_term}) after {} ms",
                fault.describe(),
                spared.iter().map(|i| self.id(*i)).collect::<Vec<_>>(),
                self.id(now),
                started.elapsed().as_millis()
            )),
            None => self.watch.violation(format!(
                "{} ({l} led term {term}): {:?} named no leader within {FAILOVER_LIMIT:?}",
                fault.describe(),
                spared.iter().map(|i| self.id(*i)).collect::<Vec<_>>()
            )),
        }
    }

    /// The links from every node of `from` to every node of `to` and back.
    pub(super) fn links_between(&self, from: &[usize], to: &[usize]) -> Vec<Link<'a>> {
        let Some(Network::Hosts(net)) = self.net else {
            unreachable!("links only on hosts");
        };
        let mut links = Vec::new();
        for a in from {
            for b in to.iter().filter(|b| *b != a) {
                links.push(net.link(&self.cluster.ids[*a], &self.cluster.ids[*b]));
                links.push(net.link(&self.cluster.ids[*b], &self.cluster.ids[*a]));
            }
        }
        links
    }
}
