//! An observer of every node's /status: each answer names a term and, when
//! the node knows one, that term's leader (itself when it leads). Raft allows
//! at most one leader per term, so two different names for one term, from
//! any two answers at any times, are a violation. The observer also says
//! whether a majority of the nodes agrees on one leader now.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use raftlb::status::Status;

use crate::cluster::{HostCluster, NODE_IDS};

/// How often the observer thread asks every node.
const OBSERVE_EVERY: Duration = Duration::from_millis(50);

pub struct Watch<'a> {
    cluster: &'a HostCluster,
    /// Term -> the leader named for it, and by whom first.
    leaders: Mutex<BTreeMap<u64, (String, String)>>,
    violations: Mutex<Vec<String>>,
    /// (term, leader) answers recorded.
    seen: Mutex<u64>,
}

impl<'a> Watch<'a> {
    pub fn new(cluster: &'a HostCluster) -> Watch<'a> {
        Watch {
            cluster,
            leaders: Mutex::new(BTreeMap::new()),
            violations: Mutex::new(Vec::new()),
            seen: Mutex::new(0),
        }
    }

    /// Node `id`'s status, its (term, leader) pair checked and recorded.
    pub fn status(&self, id: &str) -> Option<Status> {
        let status = self.cluster.status(id)?;
        if let Some(leader) = &status.leader {
            *self.seen.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            let mut leaders = self.leaders.lock().unwrap_or_else(|e| e.into_inner());
            let (first, by) = leaders
                .entry(status.term)
                .or_insert_with(|| (leader.clone(), status.id.clone()));
            if first != leader {
                let text = format!(
                    "two leaders in term {}: {first} (named by {by}) and {leader} (named by {})",
                    status.term, status.id
                );
                drop(leaders);
                eprintln!("hosts: VIOLATION: {text}");
                self.violations
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(text);
            }
        }
        Some(status)
    }

    /// The leader that at least three nodes name in the same term, the leader
    /// among them (it says it leads): (leader, term).
    pub fn majority_leader(&self) -> Option<(String, u64)> {
        let answers: Vec<Status> = NODE_IDS.iter().filter_map(|id| self.status(id)).collect();
        answers
            .iter()
            .filter(|s| s.role == "leader")
            .find(|leader| {
                let named_by = answers
                    .iter()
                    .filter(|s| s.term == leader.term && s.leader.as_ref() == Some(&leader.id))
                    .count();
                named_by >= 3
            })
            .map(|s| (s.id.clone(), s.term))
    }

    /// The leader all five nodes name, when they all answer and agree.
    pub fn agreed_by_all(&self) -> Option<String> {
        let mut agreed: Option<String> = None;
        for id in NODE_IDS {
            let leader = self.status(id)?.leader?;
            if agreed.as_ref().is_some_and(|l| *l != leader) {
                return None;
            }
            agreed = Some(leader);
        }
        agreed
    }

    /// Polls until a majority agrees on a leader (other than `not`, when
    /// given), for at most `limit`: that leader and its term.
    pub fn await_majority_leader(
        &self,
        not: Option<&str>,
        limit: Duration,
    ) -> Option<(String, u64)> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some((leader, term)) = self.majority_leader() {
                if not != Some(leader.as_str()) {
                    return Some((leader, term));
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Asks every node every 50 ms until `stop`, so that leaders are seen
    /// between the test's own looks too; at most `rounds` rounds.
    pub fn observe(&self, stop: &AtomicBool, rounds: u32) {
        for _ in 0..rounds {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            for id in NODE_IDS {
                self.status(id);
            }
            std::thread::sleep(OBSERVE_EVERY);
        }
    }

    pub fn violations(&self) -> Vec<String> {
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many (term, leader) answers were seen, and over how many terms.
    pub fn seen(&self) -> (u64, usize) {
        let answers = *self.seen.lock().unwrap_or_else(|e| e.into_inner());
        (
            answers,
            self.leaders.lock().unwrap_or_else(|e| e.into_inner()).len(),
        )
    }
}
