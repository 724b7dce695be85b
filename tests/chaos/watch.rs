//! The nemesis's and the observer's view of the nodes: `/status` with a short
//! budget (a paused node accepts connections and never answers), and a record
//! of every leader that named itself, so that two leaders in one term are
//! caught whenever both were seen.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use raftlb::status::Status;

/// How often the observer thread asks every node for its status.
const OBSERVE_EVERY: Duration = Duration::from_millis(100);

pub struct Watch {
    /// The nodes' base URLs (`http://HOST:PORT`).
    nodes: Vec<String>,
    ids: Vec<String>,
    agent: ureq::Agent,
    /// Term -> the node that said it led that term.
    leaders: Mutex<BTreeMap<u64, String>>,
    /// Whether a second node ever said it led a term that had a leader.
    two_leaders_seen: AtomicBool,
    violations: Mutex<Vec<String>>,
    /// The voters of the configuration in force, as the nemesis last read
    /// them: where the clients send most of their requests.
    members: Mutex<Vec<usize>>,
}

impl Watch {
    pub fn new(ids: &[String], nodes: &[String]) -> Watch {
        let agent = crate::support::client(Duration::from_millis(200), Duration::from_millis(400));
        Watch {
            nodes: nodes.to_vec(),
            ids: ids.to_vec(),
            agent,
            leaders: Mutex::new(BTreeMap::new()),
            two_leaders_seen: AtomicBool::new(false),
            violations: Mutex::new(Vec::new()),
            members: Mutex::new(Vec::new()),
        }
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.ids.iter().position(|x| x == id)
    }

    /// Node i's status, or None when it does not answer within 400 ms. A node
    /// that says it leads is checked against every other leader seen.
    pub fn status(&self, i: usize) -> Option<Status> {
        let url = format!("{}/status", self.nodes[i]);
        let mut resp = self.agent.get(&url).call().ok()?;
        if resp.status().as_u16() != 200 {
            return None;
        }
        let body = resp.body_mut().read_to_string().ok()?;
        let status: Status = serde_json::from_str(&body).ok()?;
        if status.role == "leader" {
            let mut leaders = self.leaders.lock().unwrap_or_else(|e| e.into_inner());
            let first = leaders
                .entry(status.term)
                .or_insert_with(|| status.id.clone());
            if *first != status.id {
                let text = format!(
                    "two leaders in term {}: {} and {}",
                    status.term, first, status.id
                );
                drop(leaders);
                self.two_leaders_seen.store(true, Ordering::Relaxed);
                self.violation(text);
            }
        }
        Some(status)
    }

    /// The leader that every node of `among` names, when they all answer and
    /// agree and it is one of them: its index and the highest term they gave.
    pub fn agreed_leader(&self, among: &[usize]) -> Option<(usize, u64)> {
        let mut agreed: Option<usize> = None;
        let mut term = 0;
        for &i in among {
            let s = self.status(i)?;
            let leader = self.index_of(s.leader.as_deref()?)?;
            if agreed.is_some_and(|l| l != leader) {
                return None;
            }
            agreed = Some(leader);
            term = term.max(s.term);
        }
        let leader = agreed?;
        among.contains(&leader).then_some((leader, term))
    }

    /// Polls until `among` agree on a leader other than `old` (any leader when
    /// None), every 5 ms, for at most `limit`: that leader, its term and the
    /// time since `since` when they did.
    pub fn await_new_leader(
        &self,
        old: Option<usize>,
        among: &[usize],
        since: Instant,
        limit: Duration,
    ) -> Option<(usize, u64, Duration)> {
        while since.elapsed() < limit {
            if let Some((leader, term)) = self.agreed_leader(among) {
                if Some(leader) != old {
                    return Some((leader, term, since.elapsed()));
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    pub fn set_members(&self, voters: &[usize]) {
        *self.members.lock().unwrap_or_else(|e| e.into_inner()) = voters.to_vec();
    }

    pub fn members(&self) -> Vec<usize> {
        (self.members.lock().unwrap_or_else(|e| e.into_inner())).clone()
    }

    pub fn violation(&self, text: String) {
        eprintln!("chaos: VIOLATION: {text}");
        (self.violations.lock().unwrap_or_else(|e| e.into_inner())).push(text);
    }

    pub fn violations(&self) -> Vec<String> {
        (self.violations.lock().unwrap_or_else(|e| e.into_inner())).clone()
    }

    /// How many terms had a leader that was seen.
    pub fn terms_with_a_leader(&self) -> usize {
        (self.leaders.lock().unwrap_or_else(|e| e.into_inner())).len()
    }

    pub fn two_leaders_seen(&self) -> bool {
        self.two_leaders_seen.load(Ordering::Relaxed)
    }

    /// Asks every node for its status every 100 ms until `stop`, so that
    /// leaders are seen between the nemesis's own looks too.
    pub fn observe(&self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            for i in 0..self.nodes.len() {
                self.status(i);
            }
            std::thread::sleep(OBSERVE_EVERY);
        }
    }
}
