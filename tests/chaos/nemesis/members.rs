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
//! stopped (`operator`: how a change is asked and read back).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use super::operator::Disturb;
use super::{down_budget, Fault, Nemesis};

/// The spare nodes' ids: slots (and hosts) made at the start, no member.
pub const SPARES: [&str; 2] = ["F", "G"];
/// The voters are kept between these.
const VOTERS_MIN: usize = 3;
const VOTERS_MAX: usize = 5;
/// A voter's disk is lost only this long after it joined: by then the leader
/// has bound its incarnation (it does within a heartbeat or two), which is
/// what makes the empty node not count (README: a disk lost before the
/// binding is not covered).
const BOUND_AFTER: Duration = Duration::from_secs(3);
/// How many times the end of the run tries to repair a lost disk.
pub const REPAIR_TRIES: usize = 3;

/// One change as JSON, for `POST /admin/member` (`at` is set when sent).
pub(super) fn remove(id: &str) -> serde_json::Value {
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

impl Nemesis<'_> {
    /// Nodes that are no voter: spares, and nodes removed earlier.
    fn outsiders(&self) -> Vec<usize> {
        (0..self.cluster.ids.len())
            .filter(|i| !self.voters.contains(i))
            .collect()
    }

    pub(super) fn pick(&mut self, from: &[usize]) -> Option<usize> {
        (!from.is_empty()).then(|| from[self.rng.range(0, from.len() as u64) as usize])
    }

    /// Whether `voters`, with `also_down` down too, keeps a majority up.
    pub(super) fn fits(&self, voters: &[usize], also_down: &[usize]) -> bool {
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
                // The new node joins under the voters in force, `old` among
                // them and already down: they need a majority up too (chaos
                // seed 1796368170155291010: with C killed, replacing B left
                // A and D of B, C, D, A, and nothing committed for 32 s).
                let steps = [voters.clone(), self.without(old)];
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
}
