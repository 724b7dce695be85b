//! Membership changes in the Raft core, one deterministic case each, on the
//! simulator with the oracle watching every step: a new node catches up as a
//! learner and is promoted, a change is refused while another is pending or
//! before the leader committed in its term, a learner neither votes nor
//! campaigns, a removed leader steps down once its removal commits and the rest
//! elect a new one, and a removed node cannot disrupt the cluster it left.

mod sim;

use raftlb::raft::{ChangeRefused, Config, MembershipChange, NodeId, Role};
use sim::Cluster;

const ELECTION_BOUND: u64 = 200;
const SEED: u64 = 7;

/// A cluster of three bootstrap voters and two spare nodes (4 and 5), down.
fn three_and_spares() -> Cluster {
    let mut config = Config::new(1, vec![1, 2, 3]);
    config.max_message_bytes = 1024;
    config.snapshot_chunk_bytes = 200;
    config.snapshot_threshold_entries = 40;
    Cluster::with_spares(config, 2, SEED)
}

/// A write committed, and the leader's own configuration entries (the
/// bootstrap one, the incarnations it binds) committed too.
fn settle(c: &mut Cluster) {
    c.commit_one(ELECTION_BOUND);
    c.run_until(ELECTION_BOUND, |c| {
        c.leader().is_some_and(|l| {
            let r = c.raft(l);
            r.membership_index() <= r.commit_index()
                && r.membership()
                    .members()
                    .iter()
                    .all(|m| m.incarnation != 0 || !c.is_up(m.id))
        })
    })
    .expect("the leader binds every live member");
}

fn add(id: NodeId) -> MembershipChange {
    MembershipChange::AddLearner {
        id,
        name: id.to_string(),
        addr: id.to_string(),
    }
}

/// Proposes `change` at the leader (again while the previous change, such as
/// the first leader's bootstrap configuration, has not committed) and runs
/// until it committed there.
fn change(c: &mut Cluster, change: MembershipChange) -> Result<(), ChangeRefused> {
    let mut tries = 0;
    let (leader, index) = loop {
        let leader = c.wait_for_leader(ELECTION_BOUND);
        match c.raft_mut(leader).propose_membership(change.clone()) {
            Ok((index, _)) => break (leader, index),
            Err(ChangeRefused::Pending { .. } | ChangeRefused::NotReady) if tries < 100 => {
                tries += 1;
                c.run(1);
            }
            Err(refused) => return Err(refused),
        }
    };
    c.process_ready(leader);
    c.run_until(ELECTION_BOUND, |c| {
        c.up_ids()
            .iter()
            .any(|&id| c.raft(id).role() == Role::Leader && c.raft(id).commit_index() >= index)
    })
    .expect("the change commits");
    Ok(())
}

/// Ticks until the leader's learner `id` has caught up (and answered) and can
/// be promoted.
fn promote_when_caught_up(c: &mut Cluster, id: NodeId) {
    for _ in 0..ELECTION_BOUND {
        match change(c, MembershipChange::Promote(id)) {
            Ok(()) => return,
            Err(ChangeRefused::NotCaughtUp { .. } | ChangeRefused::NotHeard { .. }) => c.run(1),
            Err(other) => panic!("promotion refused: {other}"),
        }
    }
    panic!("learner {id} never caught up");
}

#[test]
fn a_new_node_catches_up_as_a_learner_then_votes() {
    let mut c = three_and_spares();
    let leader = c.wait_for_leader(ELECTION_BOUND);
    for _ in 0..120 {
        c.propose_at(leader);
        c.run(1);
    }
    c.start(4);
    change(&mut c, add(4)).expect("add a learner");
    let leader = c.wait_for_leader(ELECTION_BOUND);
    assert_eq!(
        c.raft(leader).membership().quorum(),
        2,
        "a learner does not count"
    );
    assert!(!c.raft(leader).membership().is_voter(4));
    promote_when_caught_up(&mut c, 4);
    let leader = c.wait_for_leader(ELECTION_BOUND);
    assert!(c.raft(leader).membership().is_voter(4));
    assert_eq!(c.raft(leader).membership().quorum(), 3);
    // Node 4 holds everything (through a snapshot: 120 entries were compacted).
    c.commit_one(ELECTION_BOUND);
    assert_eq!(c.node(4).sm.chain, c.node(leader).sm.chain);
    assert!(c.raft(4).is_voter());
    // With node 4 voting, two of the old three down leave no majority of four.
    let others: Vec<NodeId> = [1, 2, 3].into_iter().filter(|&id| id != leader).collect();
    c.crash(others[0]);
    c.crash(others[1]);
    let before = c.oracle.committed_len();
    c.run(300);
    assert_eq!(
        c.oracle.committed_len(),
        before,
        "2 of 4 voters commit nothing"
    );
}

#[test]
fn a_change_is_refused_while_another_is_pending_and_before_the_first_commit_of_a_term() {
    let mut c = three_and_spares();
    let leader = c.wait_for_leader(ELECTION_BOUND);
    settle(&mut c);
    c.start(4);
    c.start(5);
    let (index, _) = c
        .raft_mut(leader)
        .propose_membership(add(4))
        .expect("the first change");
    assert_eq!(
        c.raft_mut(leader).propose_membership(add(5)),
        Err(ChangeRefused::Pending { index })
    );
    c.process_ready(leader);
    c.run_until(ELECTION_BOUND, |c| c.raft(leader).commit_index() >= index)
        .expect("the first change commits");
    // Not a learner that has caught up: refused with how far it is.
    assert!(matches!(
        c.raft_mut(leader)
            .propose_membership(MembershipChange::Promote(5)),
        Err(ChangeRefused::Invalid(_))
    ));
    // A new leader cannot change anything before its term's first commit.
    let follower = c.other_than(leader);
    c.raft_mut(leader)
        .transfer_leader(follower)
        .expect("leader transfers");
    c.process_ready(leader);
    let mut refused_before_commit = false;
    for _ in 0..ELECTION_BOUND {
        c.tick();
        let Some(new) = c
            .up_ids()
            .into_iter()
            .find(|&id| id != leader && c.raft(id).role() == Role::Leader)
        else {
            continue;
        };
        let r = c.raft(new);
        if r.log().term(r.commit_index()) != Some(r.term()) {
            assert_eq!(
                c.raft_mut(new).propose_membership(add(5)),
                Err(ChangeRefused::NotReady)
            );
            refused_before_commit = true;
        }
        break;
    }
    assert!(
        refused_before_commit,
        "the new leader was seen before its first commit"
    );
    assert!(matches!(
        c.raft_mut(leader).propose_membership(add(5)),
        Err(ChangeRefused::NotLeader { .. })
    ));
}

#[test]
fn a_learner_neither_votes_nor_campaigns() {
    let mut c = three_and_spares();
    c.wait_for_leader(ELECTION_BOUND);
    c.start(4);
    change(&mut c, add(4)).expect("add a learner");
    c.run(50);
    let term = c.raft(4).term();
    // Only the learner's clock runs: a voter would campaign within 30 ticks.
    for _ in 0..300 {
        c.tick_only(&[4]);
    }
    assert_eq!(c.raft(4).role(), Role::Follower);
    assert_eq!(c.raft(4).term(), term, "no campaign, no new term");
    // With two voters of three down, the learner is no majority with the third.
    let leader = c.wait_for_leader(ELECTION_BOUND);
    let others: Vec<NodeId> = [1, 2, 3].into_iter().filter(|&id| id != leader).collect();
    c.crash(leader);
    c.crash(others[0]);
    c.run(500);
    assert!(
        c.up_ids()
            .iter()
            .all(|&id| c.raft(id).role() != Role::Leader),
        "a voter and a learner elected a leader"
    );
}

#[test]
fn a_removed_leader_steps_down_once_its_removal_commits_and_the_rest_go_on() {
    let mut c = three_and_spares();
    let leader = c.wait_for_leader(ELECTION_BOUND);
    settle(&mut c);
    let (index, _) = c
        .raft_mut(leader)
        .propose_membership(MembershipChange::Remove(leader))
        .expect("the leader may remove itself");
    c.process_ready(leader);
    // It keeps leading (not counting itself) until the removal commits.
    assert_eq!(c.raft(leader).role(), Role::Leader);
    c.run_until(ELECTION_BOUND, |c| c.raft(leader).role() != Role::Leader)
        .expect("the removed leader steps down");
    assert!(c.raft(leader).commit_index() >= index);
    let new = c.wait_for_leader(ELECTION_BOUND);
    assert_ne!(new, leader);
    assert_eq!(c.raft(new).membership().voter_count(), 2);
    c.commit_one(ELECTION_BOUND);
    // The removed node, still running, never campaigns and never disturbs.
    let term = c.raft(new).term();
    c.run(1000);
    assert_eq!(c.leader(), Some(new));
    assert_eq!(c.raft(new).term(), term);
    assert_ne!(c.raft(leader).role(), Role::Leader);
}

#[test]
fn a_removed_node_cut_off_before_its_removal_cannot_disrupt() {
    let mut c = three_and_spares();
    let leader = c.wait_for_leader(ELECTION_BOUND);
    c.commit_one(ELECTION_BOUND);
    let gone = c.other_than(leader);
    c.isolate(gone);
    change(&mut c, MembershipChange::Remove(gone)).expect("remove a follower");
    c.commit_one(ELECTION_BOUND);
    // It never heard of its removal: it campaigns, with terms rising behind the cut.
    c.run(500);
    let term = c.raft(leader).term();
    c.heal();
    c.run(1000);
    assert_eq!(
        c.leader(),
        Some(leader),
        "the old member's campaigns are ignored"
    );
    assert_eq!(c.raft(leader).term(), term);
}

/// Three voters whose data dirs all started empty, as the runtime's do; node
/// `cut` hears nothing until the first leader (of the other two) is elected.
/// The cluster, its leader and the third node.
fn three_joining_one_cut(cut: NodeId) -> (Cluster, NodeId, NodeId) {
    let mut config = Config::new(1, vec![1, 2, 3]);
    config.joining = true;
    let mut c = Cluster::with_config(config, SEED);
    c.isolate(cut);
    let leader = c.wait_for_leader(ELECTION_BOUND);
    c.commit_one(ELECTION_BOUND);
    let third = c.ids().into_iter().find(|&id| id != cut && id != leader);
    (c, leader, third.expect("three nodes"))
}

/// Hunt seed 104532308's shape: node `behind` is cut off while its log's
/// configuration does not bind node `lost` yet; the others bind it and commit
/// more; `lost`'s disk is then lost and the up-to-date node goes down. The
/// empty node is joining: it refuses its vote to the node left behind, which
/// would otherwise lead without the committed writes (the oracle would stop
/// the run). With the up-to-date node back, the cluster goes on.
#[test]
fn a_node_whose_disk_was_lost_does_not_elect_a_voter_left_behind() {
    let lost = 2;
    let (mut c, leader, behind) = three_joining_one_cut(lost);
    c.heal();
    c.isolate(behind);
    c.run_until(ELECTION_BOUND, |c| {
        let r = c.raft(leader);
        r.membership().get(lost).is_some_and(|m| m.incarnation != 0)
            && r.membership_index() <= r.commit_index()
    })
    .expect("the leader binds the node it hears from at last");
    assert!(
        c.raft(behind)
            .membership()
            .get(lost)
            .is_some_and(|m| m.incarnation == 0),
        "the node left behind never saw the binding"
    );
    for _ in 0..3 {
        c.commit_one(ELECTION_BOUND);
    }
    c.wipe(lost);
    c.crash(leader);
    c.heal();
    c.start(lost);
    c.run(ELECTION_BOUND * 3);
    assert_eq!(c.leader(), None, "no leader without the up-to-date node");
    assert!(c.raft(lost).is_joining());
    c.start(leader);
    c.commit_one(ELECTION_BOUND * 2);
}

/// A change that would leave the bound voters no majority is refused: a
/// joining node votes only for a candidate that binds it, so such a cluster
/// could elect nobody once its leader is gone. Removing the node never heard
/// from is fine.
#[test]
fn a_change_that_would_leave_bound_voters_no_majority_is_refused() {
    let silent = 3;
    let (mut c, _, bound) = three_joining_one_cut(silent);
    match change(&mut c, MembershipChange::Remove(bound)) {
        Err(ChangeRefused::Unbound {
            bound: 1,
            voters: 2,
        }) => {}
        other => panic!("removing a bound voter: {other:?}"),
    }
    change(&mut c, MembershipChange::Remove(silent)).expect("remove the node never heard from");
    c.commit_one(ELECTION_BOUND);
}

/// The chaos replay of seed 1796339462129267183: a leader promotes a learner
/// it has heard from before any heartbeat of its binds it, the promotion
/// reaches the followers, and the leader dies at once. The promotion binds
/// the learner itself, so the learner (joining: it votes only for a
/// candidate whose configuration binds it) elects one of the two others: 3 of
/// 4 voters. Before, it was an unbound voter and 2 of 4 could elect nobody
/// until the old leader came back. A learner never heard from is not
/// promoted at all.
#[test]
fn a_promotion_binds_the_learner_so_the_leader_may_die_at_once() {
    let mut config = Config::new(1, vec![1, 2, 3]);
    config.joining = true;
    let mut c = Cluster::with_spares(config, 2, SEED);
    c.wait_for_leader(ELECTION_BOUND);
    settle(&mut c);
    let leader = c.wait_for_leader(ELECTION_BOUND);
    let followers: Vec<NodeId> = [1, 2, 3].into_iter().filter(|&id| id != leader).collect();

    // The leader's clock stands still from here (nobody's ticks), so no
    // heartbeat's `maybe_bind` runs: only the changes it is asked for.
    c.start(4);
    let (added, _) = c
        .raft_mut(leader)
        .propose_membership(add(4))
        .expect("add a learner");
    c.process_ready(leader);
    c.run_until_still(ELECTION_BOUND, |c| {
        let r = c.raft(leader);
        r.commit_index() >= added && r.progress_of(4).is_some_and(|p| p.match_index >= added)
    })
    .expect("the learner holds its own addition, and it committed");
    assert_eq!(
        c.raft(leader).membership().get(4).map(|m| m.incarnation),
        Some(0),
        "no heartbeat bound the learner"
    );
    let (promoted, _) = c
        .raft_mut(leader)
        .propose_membership(MembershipChange::Promote(4))
        .expect("promote the learner");
    assert_eq!(
        c.raft(leader).membership().get(4).map(|m| m.incarnation),
        Some(c.raft(4).config().incarnation),
        "the promotion binds the learner"
    );
    c.process_ready(leader);
    c.run_until_still(ELECTION_BOUND, |c| {
        followers
            .iter()
            .chain(&[4])
            .all(|&id| c.raft(id).log().last_index() >= promoted)
    })
    .expect("the promotion reaches every follower");

    c.crash(leader);
    let next = c.wait_for_leader(ELECTION_BOUND * 3);
    assert_ne!(next, leader);
    c.commit_one(ELECTION_BOUND);

    // A learner that never answered (node 5 is down) is not promoted.
    c.start(leader);
    change(&mut c, add(5)).expect("add a learner that is down");
    match change(&mut c, MembershipChange::Promote(5)) {
        Err(ChangeRefused::NotHeard { id: 5 }) => {}
        other => panic!("promoting a learner never heard from: {other:?}"),
    }
}
