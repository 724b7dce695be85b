//! Membership changes asked of this node (`POST /admin/member`): one at a
//! time, each a short plan of single-server steps the leader's event loop
//! carries out, waiting for each step's entry to commit before the next.
//!
//! - add F: F joins as a learner, catches up, then is promoted;
//! - remove E: one step;
//! - replace E with F: F joins as a learner and catches up, then E leaves and
//!   F is promoted (E first, so a dead E does not stay in a larger majority);
//!   when E is this leader itself, F is promoted first and E leaves last (the
//!   leader steps down once its removal commits).
//!
//! A plan is refused at once (409) while another plan runs; a change pending
//! in the log without one (the leader binding a member just added, or a
//! change a previous leader began) is waited for. A plan is answered 503 if
//! this node stops leading or the deadline passes midway (the steps done stay
//! done: `raftlb member list` shows where it stopped).

use std::collections::VecDeque;
use std::time::Instant;

use crossbeam_channel::Sender;

use crate::nodes::node_id;
use crate::raft::{ChangeRefused, MembershipChange, NodeId, Raft, Role};

/// What an operator asks for, with names as nodes.txt writes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberOp {
    Add {
        name: String,
        addr: String,
    },
    Remove {
        name: String,
    },
    Replace {
        old: String,
        name: String,
        addr: String,
    },
}

/// How a plan ended, for the HTTP answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberOutcome {
    /// Every step committed (200): the configuration now in force.
    Done(String),
    /// Another change is running or pending (409).
    Busy(String),
    /// The request cannot be carried out (400): unknown member, already one.
    Invalid(String),
    /// This node does not lead; the leader's name and address if known.
    NotLeader(Option<(String, String)>),
    /// No leader, leadership lost midway, or the deadline passed (503).
    Unavailable(String),
}

pub(crate) type MemberReply = Sender<MemberOutcome>;

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Change(MembershipChange),
    /// Wait until the learner holds about all of the leader's log.
    CaughtUp(NodeId),
}

/// The plan being carried out.
pub(crate) struct MemberJob {
    steps: VecDeque<Step>,
    /// The entry of the step proposed last, until it commits.
    waiting: Option<(u64, u64)>,
    done: usize,
    reply: MemberReply,
    deadline: Instant,
    /// Why the leader last refused the current step for now (a change
    /// pending, a learner behind or not heard from): told if the deadline
    /// passes on it.
    refused: Option<String>,
}

/// A learner within this many entries of the leader's last one has caught up.
const CAUGHT_UP_ENTRIES: u64 = 64;

impl MemberJob {
    /// The plan for `op` against the configuration in force, or why not (the
    /// outcome to answer at once).
    pub(crate) fn plan(
        raft: &Raft,
        op: MemberOp,
        reply: MemberReply,
        deadline: Instant,
    ) -> Result<MemberJob, (MemberReply, MemberOutcome)> {
        let membership = raft.membership();
        let refuse = |reply, outcome| Err((reply, outcome));
        if raft.role() != Role::Leader {
            let leader = raft
                .leader()
                .and_then(|l| membership.get(l))
                .map(|m| (m.name.clone(), m.addr.clone()));
            return refuse(reply, MemberOutcome::NotLeader(leader));
        }
        // A configuration entry still pending (this leader's binding of a
        // member just added, or a change a previous leader began) is waited
        // for by the plan's first step, not refused: the plan is checked
        // against the configuration in force, which that entry already is.
        let member = |name: &str| membership.by_name(name).map(|m| m.id);
        let newcomer = |name: &str| -> Result<NodeId, String> {
            if member(name).is_some() {
                return Err(format!("node {name} is already a member"));
            }
            let id = node_id(name);
            if membership.contains(id) {
                return Err(format!(
                    "node {name}'s id collides with a member's; pick another name"
                ));
            }
            Ok(id)
        };
        let steps = match &op {
            MemberOp::Add { name, addr } => match newcomer(name) {
                Ok(id) => vec![
                    Step::Change(MembershipChange::AddLearner {
                        id,
                        name: name.clone(),
                        addr: addr.clone(),
                    }),
                    Step::CaughtUp(id),
                    Step::Change(MembershipChange::Promote(id)),
                ],
                Err(reason) => return refuse(reply, MemberOutcome::Invalid(reason)),
            },
            MemberOp::Remove { name } => match member(name) {
                Some(id) => vec![Step::Change(MembershipChange::Remove(id))],
                None => {
                    return refuse(
                        reply,
                        MemberOutcome::Invalid(format!("node {name} is not a member")),
                    )
                }
            },
            MemberOp::Replace { old, name, addr } => {
                let Some(old_id) = member(old) else {
                    return refuse(
                        reply,
                        MemberOutcome::Invalid(format!("node {old} is not a member")),
                    );
                };
                let id = match newcomer(name) {
                    Ok(id) => id,
                    Err(reason) => return refuse(reply, MemberOutcome::Invalid(reason)),
                };
                let add = Step::Change(MembershipChange::AddLearner {
                    id,
                    name: name.clone(),
                    addr: addr.clone(),
                });
                let promote = Step::Change(MembershipChange::Promote(id));
                let remove = Step::Change(MembershipChange::Remove(old_id));
                if old_id == raft.id() {
                    vec![add, Step::CaughtUp(id), promote, remove]
                } else {
                    vec![add, Step::CaughtUp(id), remove, promote]
                }
            }
        };
        log::info!("membership change {op:?}: {} steps", steps.len());
        Ok(MemberJob {
            steps: steps.into(),
            waiting: None,
            done: 0,
            reply,
            deadline,
            refused: None,
        })
    }

    /// Moves the plan on as far as it can go now; returns true when it ended
    /// (answered).
    pub(crate) fn progress(&mut self, raft: &mut Raft, now: Instant) -> bool {
        loop {
            if let Some((index, term)) = self.waiting {
                if raft.commit_index() < index {
                    // A leader that stopped leading while its own removal was
                    // in flight is no member of its configuration: no one
                    // sends it entries any more, so it would never learn
                    // whether the step committed (chaos seed 1301).
                    if raft.role() != Role::Leader && !raft.membership().contains(raft.id()) {
                        return self.finish(self.partial(
                            "this node stopped leading before it learned whether its removal committed",
                        ));
                    }
                    break;
                }
                if raft.log().term(index).is_some_and(|t| t != term) {
                    return self.finish(MemberOutcome::Unavailable(format!(
                        "step {} was lost to a leader change; check `raftlb member list` and ask again",
                        self.done + 1
                    )));
                }
                self.waiting = None;
                self.done += 1;
                self.steps.pop_front();
            }
            let Some(step) = self.steps.front().cloned() else {
                return self.finish(MemberOutcome::Done(raft.membership().to_string()));
            };
            if raft.role() != Role::Leader {
                return self.finish(self.partial("this node stopped leading"));
            }
            match step {
                Step::CaughtUp(id) => {
                    let matched = raft.progress_of(id).map_or(0, |p| p.match_index);
                    if matched + CAUGHT_UP_ENTRIES < raft.log().last_index() || matched == 0 {
                        break;
                    }
                    self.done += 1;
                    self.steps.pop_front();
                }
                Step::Change(change) => {
                    let promotes = matches!(change, MembershipChange::Promote(_));
                    match raft.propose_membership(change) {
                        Ok(entry) => {
                            self.waiting = Some(entry);
                            self.refused = None;
                        }
                        Err(
                            e @ (ChangeRefused::NotReady
                            | ChangeRefused::Pending { .. }
                            | ChangeRefused::NotCaughtUp { .. }
                            | ChangeRefused::NotHeard { .. }
                            | ChangeRefused::TransferInProgress),
                        ) => {
                            self.refused = Some(named(raft, &e));
                            break;
                        }
                        // A learner is bound as soon as this leader hears from
                        // it: its promotion waits for that like for its catch-up.
                        Err(e @ ChangeRefused::Unbound { .. }) if promotes => {
                            self.refused = Some(named(raft, &e));
                            break;
                        }
                        Err(e @ ChangeRefused::Unbound { .. }) => {
                            let outcome = if self.done == 0 {
                                MemberOutcome::Busy(e.to_string())
                            } else {
                                self.partial(&e.to_string())
                            };
                            return self.finish(outcome);
                        }
                        Err(ChangeRefused::NotLeader { .. }) => {
                            return self.finish(self.partial("this node stopped leading"))
                        }
                        Err(ChangeRefused::Invalid(e)) => {
                            let outcome = if self.done == 0 {
                                MemberOutcome::Invalid(e.to_string())
                            } else {
                                self.partial(&e.to_string())
                            };
                            return self.finish(outcome);
                        }
                    }
                }
            }
        }
        if now >= self.deadline {
            let why = match (self.steps.front(), &self.refused) {
                (Some(Step::CaughtUp(_)), _) => {
                    "the new node did not catch up in time (is it running?)".to_string()
                }
                (Some(Step::Change(_)), Some(refused)) if self.waiting.is_none() => {
                    format!("the leader refused the change until the deadline: {refused}")
                }
                _ => "the change did not commit in time".to_string(),
            };
            return self.finish(self.partial(&why));
        }
        false
    }

    fn partial(&self, why: &str) -> MemberOutcome {
        MemberOutcome::Unavailable(format!(
            "{why}; {} of {} steps done: check `raftlb member list`",
            self.done,
            self.done + self.steps.len()
        ))
    }

    fn finish(&self, outcome: MemberOutcome) -> bool {
        log::info!("membership change ended: {outcome:?}");
        let _ = self.reply.try_send(outcome);
        true
    }
}

/// A refusal as an operator reads it: the node it is about by its name, not
/// by the id the core knows it as.
fn named(raft: &Raft, refused: &ChangeRefused) -> String {
    let text = refused.to_string();
    let about = match refused {
        ChangeRefused::NotCaughtUp { id, .. } | ChangeRefused::NotHeard { id } => Some(*id),
        _ => None,
    };
    match about.and_then(|id| raft.membership().get(id)) {
        Some(m) => text.replacen(&format!("node {}", m.id), &format!("node {}", m.name), 1),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Config, Member, Membership, RestoredState};

    /// Node "A" leading alone, with "B" a learner, every entry committed.
    fn leader() -> Raft {
        let member = |name: &str, voter| Member {
            id: node_id(name),
            name: name.into(),
            addr: "127.0.0.1:1".into(),
            voter,
            incarnation: 0,
        };
        let bootstrap = Membership::new(vec![member("A", true), member("B", false)]).unwrap();
        let config = Config::with_bootstrap(node_id("A"), bootstrap);
        let mut raft = Raft::new(config, RestoredState::default(), 1).unwrap();
        for _ in 0..200 {
            raft.tick();
            let _ = raft.ready();
            raft.advance();
            if raft.role() == Role::Leader && raft.membership_index() <= raft.commit_index() {
                let _ = raft.ready();
                raft.advance();
                if raft
                    .membership()
                    .get(node_id("A"))
                    .is_some_and(|m| m.incarnation != 0)
                {
                    return raft;
                }
            }
        }
        panic!("no settled leader");
    }

    fn plan(raft: &Raft, op: MemberOp) -> Result<Vec<Step>, MemberOutcome> {
        let (reply, _answer) = crossbeam_channel::bounded(1);
        let deadline = Instant::now();
        MemberJob::plan(raft, op, reply, deadline)
            .map(|job| job.steps.into_iter().collect())
            .map_err(|(_, outcome)| outcome)
    }

    #[test]
    fn replace_removes_the_old_node_before_the_new_one_votes_unless_it_leads() {
        let raft = leader();
        let (a, b, f) = (node_id("A"), node_id("B"), node_id("F"));
        let add_f = Step::Change(MembershipChange::AddLearner {
            id: f,
            name: "F".into(),
            addr: "127.0.0.1:2".into(),
        });
        let replace = |old: &str| MemberOp::Replace {
            old: old.into(),
            name: "F".into(),
            addr: "127.0.0.1:2".into(),
        };
        assert_eq!(
            plan(&raft, replace("B")).unwrap(),
            vec![
                add_f.clone(),
                Step::CaughtUp(f),
                Step::Change(MembershipChange::Remove(b)),
                Step::Change(MembershipChange::Promote(f)),
            ]
        );
        assert_eq!(
            plan(&raft, replace("A")).unwrap(),
            vec![
                add_f,
                Step::CaughtUp(f),
                Step::Change(MembershipChange::Promote(f)),
                Step::Change(MembershipChange::Remove(a)),
            ],
            "the leader leaves last"
        );
    }

    #[test]
    fn a_step_refused_until_the_deadline_says_why() {
        let mut raft = leader();
        let (reply, answer) = crossbeam_channel::bounded(1);
        let now = Instant::now();
        // B, a learner this leader never heard from, cannot be promoted.
        let mut job = MemberJob {
            steps: vec![Step::Change(MembershipChange::Promote(node_id("B")))].into(),
            waiting: None,
            done: 0,
            reply,
            deadline: now + std::time::Duration::from_secs(1),
            refused: None,
        };
        assert!(!job.progress(&mut raft, now), "waits until the deadline");
        assert!(job.progress(&mut raft, job.deadline));
        match answer.try_recv() {
            Ok(MemberOutcome::Unavailable(why)) => assert!(
                why.starts_with("the leader refused the change until the deadline: ")
                    && why.contains("voters bound"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_refusal_names_the_node_it_is_about() {
        let raft = leader();
        let b = node_id("B");
        assert_eq!(
            named(&raft, &ChangeRefused::NotHeard { id: b }),
            ChangeRefused::NotHeard { id: b }
                .to_string()
                .replace(&b.to_string(), "B")
        );
        assert!(named(&raft, &ChangeRefused::NotHeard { id: b }).starts_with("node B has not"));
        // An id the configuration does not know stays as it is.
        assert_eq!(
            named(&raft, &ChangeRefused::NotHeard { id: 7 }),
            ChangeRefused::NotHeard { id: 7 }.to_string()
        );
    }

    #[test]
    fn impossible_requests_are_refused_before_any_step() {
        let raft = leader();
        let refused = |op| match plan(&raft, op) {
            Err(MemberOutcome::Invalid(reason)) => reason,
            other => panic!("not refused: {other:?}"),
        };
        let add = |name: &str| MemberOp::Add {
            name: name.into(),
            addr: "127.0.0.1:2".into(),
        };
        assert!(refused(add("B")).contains("already a member"));
        assert!(refused(MemberOp::Remove { name: "Z".into() }).contains("not a member"));
        let replace = MemberOp::Replace {
            old: "Z".into(),
            name: "F".into(),
            addr: "127.0.0.1:2".into(),
        };
        assert!(refused(replace).contains("not a member"));
        // A follower names the leader instead.
        let follower = Raft::new(
            Config::new(node_id("A"), vec![node_id("A"), node_id("B")]),
            RestoredState::default(),
            1,
        )
        .unwrap();
        assert!(matches!(
            plan(&follower, add("F")),
            Err(MemberOutcome::NotLeader(None))
        ));
    }
}
