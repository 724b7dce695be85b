//! The classic cases of Raft, one deterministic test each, on the simulator with
//! the oracle watching every step (so each also checks the safety properties).
//! Section numbers cite the Raft paper (Ongaro & Ousterhout, 2014).

mod sim;

use raftlb::raft::{
    AppendResult, Config, Entry, EntryKind, HardState, MessageBody, ProgressState, ProposeError,
    Role, MESSAGE_OVERHEAD_BYTES,
};
use sim::{Cluster, Faults};

/// Election timeouts are 15-30 ticks: a leader must appear well within this.
const ELECTION_BOUND: u64 = 200;
const SEED: u64 = 42;

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::Command,
        data: (1_000_000 + index).to_le_bytes().to_vec(),
    }
}

fn terms(c: &Cluster) -> Vec<u64> {
    c.up_ids().iter().map(|&id| c.raft(id).term()).collect()
}

#[test]
fn initial_election_elects_exactly_one_leader() {
    for size in [1, 3, 5] {
        let mut c = Cluster::new(size, SEED);
        let leader = c.wait_for_leader(ELECTION_BOUND);
        let term = c.raft(leader).term();
        assert!(
            c.ids().iter().all(|&id| c.raft(id).term() == term),
            "all agree on the term"
        );
        // With no faults the leader stays: heartbeats keep followers from campaigning.
        c.run(500);
        assert_eq!(c.leader(), Some(leader));
        assert_eq!(c.raft(leader).term(), term);
    }
}

#[test]
fn leader_is_replaced_after_it_crashes_and_rejoins_as_follower() {
    let mut c = Cluster::new(3, SEED);
    let old = c.wait_for_leader(ELECTION_BOUND);
    let old_term = c.raft(old).term();
    c.crash(old);
    let new = c.wait_for_leader(ELECTION_BOUND);
    assert_ne!(new, old);
    assert!(c.raft(new).term() > old_term);
    c.start(old);
    c.run(100);
    assert_eq!(
        c.leader(),
        Some(new),
        "the old leader rejoins without disruption"
    );
    assert_eq!(c.raft(old).role(), Role::Follower);
    c.commit_one(ELECTION_BOUND);
}

#[test]
fn no_leader_without_a_quorum() {
    let mut c = Cluster::new(5, SEED);
    let leader = c.wait_for_leader(ELECTION_BOUND);
    let others: Vec<u64> = c.ids().into_iter().filter(|&id| id != leader).collect();
    for &id in &others[..3] {
        c.crash(id);
    }
    // CheckQuorum: the leader steps down within an election timeout or two.
    c.run(100);
    for _ in 0..20 {
        c.run(50);
        assert!(
            c.up_ids()
                .iter()
                .all(|&id| c.raft(id).role() != Role::Leader),
            "two nodes of five elected a leader"
        );
    }
    for &id in &others[..3] {
        c.start(id);
    }
    c.wait_for_leader(ELECTION_BOUND);
}

#[test]
fn many_elections_with_repeated_crashes_keep_one_leader_per_term() {
    let mut c = Cluster::new(5, SEED);
    for round in 0..30 {
        let leader = c.wait_for_leader(ELECTION_BOUND * 2);
        c.commit_one(ELECTION_BOUND * 2);
        c.crash(leader);
        if round % 3 == 0 {
            let up = c.up_ids();
            c.crash(up[round % up.len()]);
        }
        c.wait_for_leader(ELECTION_BOUND * 2);
        for id in c.ids() {
            if !c.is_up(id) {
                c.start(id);
            }
        }
    }
    assert!(c.oracle.elections >= 30, "each round elected a new leader");
}

#[test]
fn basic_agreement_applies_the_same_commands_everywhere() {
    let mut c = Cluster::new(5, SEED);
    for expected in 1..=20u64 {
        let value = c.commit_one(ELECTION_BOUND);
        assert_eq!(value, expected);
    }
    c.check_liveness(ELECTION_BOUND);
    assert_eq!(c.oracle.acknowledged.len(), 21);
}

#[test]
fn agreement_continues_with_a_follower_down_and_it_catches_up() {
    let mut c = Cluster::new(3, SEED);
    let leader = c.wait_for_leader(ELECTION_BOUND);
    let follower = c.other_than(leader);
    c.crash(follower);
    for _ in 0..10 {
        c.commit_one(ELECTION_BOUND);
    }
    c.start(follower);
    c.check_liveness(ELECTION_BOUND);
}

#[test]
fn no_commit_without_a_quorum() {
    let mut c = Cluster::new(5, SEED);
    let leader = c.wait_for_leader(ELECTION_BOUND);
    c.commit_one(ELECTION_BOUND);
    // Let the leader's own entries (the incarnations it binds) settle first.
    c.run(50);
    let commit = c.raft(leader).commit_index();
    let followers: Vec<u64> = c.ids().into_iter().filter(|&id| id != leader).collect();
    for &id in &followers[..3] {
        c.crash(id);
    }
    let (value, index, _) = c.propose_at(leader).expect("still leader");
    c.run(10); // less than an election timeout: it still leads
    assert_eq!(
        c.raft(leader).commit_index(),
        commit,
        "committed with 2 of 5"
    );
    for &id in &followers[..3] {
        c.start(id);
    }
    c.run_until(ELECTION_BOUND, |c| {
        c.ids().iter().all(|&id| c.node(id).sm.contains(value))
    })
    .expect("the entry commits once a quorum is back");
    assert!(c.raft(c.leader().unwrap()).commit_index() >= index);
}

#[test]
fn concurrent_proposals_all_commit_in_proposal_order() {
    let mut c = Cluster::new(5, SEED);
    let leader = c.wait_for_leader(ELECTION_BOUND);
    let mut proposed = Vec::new();
    for _ in 0..100 {
        let (value, index, _) = c.propose_at(leader).expect("leader accepts");
        proposed.push((index, value));
    }
    c.run_until(ELECTION_BOUND, |c| {
        c.ids().iter().all(|&id| c.node(id).sm.contains(100))
    })
    .expect("every proposal commits");
    assert!(
        proposed.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "consecutive indexes"
    );
    c.check_liveness(ELECTION_BOUND);
}

#[test]
fn partitioned_old_leader_rejoins_and_its_uncommitted_entries_are_replaced() {
    let mut c = Cluster::new(5, SEED);
    let old = c.wait_for_leader(ELECTION_BOUND);
    c.commit_one(ELECTION_BOUND);
    let partner = c.other_than(old);
    c.partition(&[old, partner]);
    let mut lost = Vec::new();
    for _ in 0..5 {
        lost.push(c.propose_at(old).expect("still believes it leads").0);
    }
    let new = c
        .run_until(ELECTION_BOUND, |c| {
            c.up_ids()
                .iter()
                .any(|&id| id != old && id != partner && c.raft(id).role() == Role::Leader)
        })
        .map(|_| {
            c.ids()
                .into_iter()
                .find(|&id| c.raft(id).role() == Role::Leader && id != old)
                .expect("found")
        })
        .expect("the majority side elects a leader");
    for _ in 0..5 {
        c.propose_at(new).expect("the new leader accepts");
    }
    c.run(50);
    c.heal();
    c.check_liveness(ELECTION_BOUND);
    for value in lost {
        assert!(
            c.ids().iter().all(|&id| !c.node(id).sm.contains(value)),
            "an uncommitted entry of the old leader survived"
        );
    }
}

/// Like the MIT 6.824 "backup" test: a follower with a long conflicting suffix
/// is brought in line, and fast backtracking (§5.3, the term hint) needs a few
/// rejections per conflicting term, not one per entry.
#[test]
fn follower_far_behind_with_a_long_conflicting_log_is_backed_up_quickly() {
    let mut c = Cluster::new(5, SEED);
    let old = c.wait_for_leader(ELECTION_BOUND);
    c.commit_one(ELECTION_BOUND);
    let partner = c.other_than(old);
    c.partition(&[old, partner]);
    for _ in 0..60 {
        c.propose_at(old);
    }
    c.run(5);
    c.wait_for_leader(ELECTION_BOUND);
    for _ in 0..60 {
        c.commit_one(ELECTION_BOUND);
    }
    c.crash(old);
    c.trace = Some(Vec::new());
    c.heal();
    c.check_liveness(ELECTION_BOUND * 2);
    let rejections = c
        .trace
        .as_ref()
        .expect("tracing")
        .iter()
        .filter(|m| {
            m.from == partner
                && matches!(m.body, MessageBody::AppendEntriesResponse { result: AppendResult::Rejected { rejected_index, .. } } if rejected_index > 0)
        })
        .count();
    assert!(
        rejections <= 6,
        "{rejections} rejections to skip one conflicting term"
    );
    c.start(old);
    c.check_liveness(ELECTION_BOUND * 2);
}

/// Figure 8: a leader must not commit an entry of an earlier term by counting
/// replicas. S1 leads term 4 holding (2, term 2); S5 holds (2, term 3). Once S3 and
/// S4 also hold (2, term 2), a majority has it, but committing it would be wrong:
/// S5 can still win an election and overwrite it.
#[test]
fn figure_8_an_old_term_entry_is_not_committed_by_counting_replicas() {
    let mut config = Config::new(1, vec![1, 2, 3, 4, 5]);
    // One entry per append, so the old entry and the new leader's no-op travel apart.
    config.max_message_bytes = MESSAGE_OVERHEAD_BYTES + 60;
    config.snapshot_chunk_bytes = 32;
    let hs = |term| HardState {
        term,
        vote: None,
        commit: 1,
    };
    let states = vec![
        (hs(3), vec![entry(1, 1), entry(2, 2)]),
        (hs(3), vec![entry(1, 1), entry(2, 2)]),
        (hs(3), vec![entry(1, 1)]),
        (hs(3), vec![entry(1, 1)]),
        (hs(3), vec![entry(1, 1), entry(2, 3)]),
    ];
    let mut c = Cluster::with_logs(config, SEED, states);
    c.isolate(5);
    // S1 alone sees time pass, so it campaigns and wins term 4.
    for _ in 0..ELECTION_BOUND {
        c.tick_only(&[1]);
        if c.raft(1).role() == Role::Leader {
            break;
        }
    }
    assert_eq!(c.raft(1).role(), Role::Leader);
    assert_eq!(c.raft(1).term(), 4);
    // S3 and S4 never receive the term-4 no-op; S2 does, but it is only 2 of 5.
    c.filter = Some(Box::new(|m| {
        let carries_new_term = matches!(&m.body, MessageBody::AppendEntries { entries, .. } if entries.iter().any(|e| e.term == 4));
        !(m.from == 1 && (m.to == 3 || m.to == 4) && carries_new_term)
    }));
    for _ in 0..60 {
        c.tick_only(&[1]);
        assert!(
            c.raft(1).commit_index() < 2,
            "committed an entry of term 2 by counting replicas in term 4"
        );
    }
    for id in [3, 4] {
        assert_eq!(
            c.raft(id).log().term(2),
            Some(2),
            "node {id} holds the old entry"
        );
    }
    // Figure 8 (d): S1 crashes, S5 wins with S3 and S4, and replaces index 2.
    c.crash(1);
    c.filter = None;
    c.heal();
    c.isolate(2);
    c.wait_for_leader(ELECTION_BOUND);
    c.heal();
    c.start(1);
    c.check_liveness(ELECTION_BOUND);
}

/// Figure 8 under an unreliable network (as in MIT 6.824's test): leaders crash
/// at random moments while the network drops and reorders; the oracle checks
/// every step, and the cluster agrees in the end.
#[test]
fn figure_8_unreliable_network_and_crashing_leaders_stay_safe() {
    for seed in 0..20 {
        let mut c = Cluster::new(5, seed);
        c.faults = Faults {
            drop_per_mille: 100,
            duplicate_per_mille: 20,
            max_delay_ticks: 6,
            propose_per_mille: 500,
            ..Faults::default()
        };
        for _ in 0..1000 {
            if c.rng.chance(30, 1000) {
                if let Some(leader) = c
                    .up_ids()
                    .into_iter()
                    .find(|&id| c.raft(id).role() == Role::Leader)
                {
                    c.crash(leader);
                }
            }
            if c.up_ids().len() < 3 {
                let down: Vec<u64> = c.ids().into_iter().filter(|&id| !c.is_up(id)).collect();
                let pick = c.rng.range(0, down.len() as u64) as usize;
                c.start(down[pick]);
            }
            c.chaos_step();
        }
        c.heal_all();
        c.check_liveness(ELECTION_BOUND * 2);
    }
}

#[test]
fn every_node_restarts_and_keeps_its_committed_state() {
    let mut c = Cluster::new(5, SEED);
    let mut values = Vec::new();
    for _ in 0..100 {
        values.push(c.commit_one(ELECTION_BOUND));
    }
    assert!(c.stats.compactions > 0, "the log was compacted on the way");
    for id in c.ids() {
        c.crash(id);
    }
    for id in c.ids() {
        c.start(id);
        let sm = &c.node(id).sm;
        // A restart restores the snapshot and re-applies the committed entries
        // (the commit index is durable too), before any leader exists.
        assert!(
            values.iter().all(|&v| sm.contains(v)),
            "node {id} lost committed values on restart"
        );
    }
    c.check_liveness(ELECTION_BOUND);
}

#[test]
fn lagging_follower_receives_a_snapshot_interrupted_and_resumed() {
    let mut c = Cluster::new(3, SEED);
    let leader = c.wait_for_leader(ELECTION_BOUND);
    let lagging = c.other_than(leader);
    c.crash(lagging);
    for _ in 0..150 {
        c.commit_one(ELECTION_BOUND);
    }
    assert!(
        c.raft(leader).log().first_index() > 1,
        "the leader compacted its log"
    );
    c.trace = Some(Vec::new());
    c.start(lagging);
    // Let a few chunks through, then cut the link mid-transfer.
    c.run_until(ELECTION_BOUND, |c| {
        c.trace.as_ref().unwrap().iter().any(|m| {
            m.to == lagging
                && matches!(m.body, MessageBody::InstallSnapshot { offset, .. } if offset > 0)
        })
    })
    .expect("the snapshot is being sent");
    assert_eq!(
        c.raft(leader).progress_of(lagging).unwrap().state,
        ProgressState::Snapshot
    );
    c.isolate(lagging);
    c.run(10); // the chunks in flight are lost
    let chunks_before = c.trace.as_ref().unwrap().len();
    c.cut
        .retain(|&(a, b)| !((a == lagging && b == leader) || (a == leader && b == lagging)));
    c.check_liveness(ELECTION_BOUND * 2);
    let resumed: Vec<u64> = c.trace.as_ref().unwrap()[chunks_before..]
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::InstallSnapshot { offset, .. } if m.to == lagging => Some(offset),
            _ => None,
        })
        .collect();
    assert!(
        !resumed.is_empty() && resumed[0] > 0,
        "the transfer resumed mid-snapshot, not from 0: {resumed:?}"
    );
    assert!(c.stats.snapshots_installed >= 1);
}

#[test]
fn pre_vote_keeps_a_rejoining_node_from_deposing_a_stable_leader() {
    let mut c = Cluster::new(5, SEED);
    let leader = c.wait_for_leader(ELECTION_BOUND);
    let term = c.raft(leader).term();
    let loner = c.other_than(leader);
    c.isolate(loner);
    c.run(500); // many election timeouts alone
    assert_eq!(
        c.raft(loner).term(),
        term,
        "a pre-candidate does not inflate its term"
    );
    c.heal();
    c.run(200);
    assert_eq!(c.leader(), Some(leader), "the leader was deposed");
    assert_eq!(c.raft(leader).term(), term);
    assert!(terms(&c).iter().all(|&t| t == term));
}

#[test]
fn check_quorum_makes_an_isolated_leader_step_down() {
    let mut c = Cluster::new(5, SEED);
    let leader = c.wait_for_leader(ELECTION_BOUND);
    c.isolate(leader);
    c.run(2 * c.config_template.election_ticks_min + 1);
    assert_ne!(
        c.raft(leader).role(),
        Role::Leader,
        "a leader without a quorum must step down"
    );
    let failures = c.stats.read_failures;
    c.read_at(leader);
    assert_eq!(
        c.stats.read_failures,
        failures + 1,
        "a node that knows no leader fails reads at once"
    );
}

#[test]
fn leadership_transfer_hands_over_to_the_target() {
    let mut c = Cluster::new(5, SEED);
    let leader = c.wait_for_leader(ELECTION_BOUND);
    c.commit_one(ELECTION_BOUND);
    let term = c.raft(leader).term();
    let target = c.other_than(leader);
    c.raft_mut(leader)
        .transfer_leader(target)
        .expect("the leader transfers");
    assert_eq!(
        c.raft_mut(leader).propose(vec![0; 8]),
        Err(ProposeError::TransferInProgress)
    );
    c.process_ready(leader);
    c.run_until(50, |c| c.leader() == Some(target))
        .expect("the target leads within a few ticks");
    assert_eq!(c.raft(target).term(), term + 1);
    c.check_liveness(ELECTION_BOUND);
}

#[test]
fn read_index_on_a_follower_sees_the_latest_write() {
    let mut c = Cluster::new(3, SEED);
    let leader = c.wait_for_leader(ELECTION_BOUND);
    let value = c.commit_one(ELECTION_BOUND);
    let follower = c.other_than(leader);
    let checked = c.oracle.reads_checked;
    c.read_at(follower);
    c.read_at(leader);
    c.run_until(50, |c| c.oracle.reads_checked == checked + 2)
        .expect("both reads are served");
    assert!(c.node(follower).sm.contains(value));
}

#[test]
fn proposals_that_cannot_fit_a_message_are_refused() {
    let mut c = Cluster::new(3, SEED);
    let leader = c.wait_for_leader(ELECTION_BOUND);
    let limit = c.config_template.max_entry_data_bytes();
    assert_eq!(
        c.raft_mut(leader).propose(vec![0; limit + 1]),
        Err(ProposeError::TooLarge { limit })
    );
    let follower = c.other_than(leader);
    assert_eq!(
        c.raft_mut(follower).propose(vec![0; 8]),
        Err(ProposeError::NotLeader {
            leader: Some(leader)
        })
    );
}

/// Figure 2: currentTerm and votedFor are on stable storage before the vote is
/// answered. A voter that crashes right after voting must remember the vote, or it
/// could vote again in the same term and let two leaders win it.
#[test]
fn a_vote_survives_a_crash_right_after_it_is_cast() {
    let mut c = Cluster::new(3, SEED);
    c.trace = Some(Vec::new());
    let granted = |c: &Cluster| {
        c.trace
            .as_ref()
            .expect("tracing")
            .iter()
            .find_map(|m| match m.body {
                MessageBody::RequestVoteResponse {
                    pre_vote: false,
                    granted: true,
                } => Some((m.from, m.to, m.term)),
                _ => None,
            })
    };
    for _ in 0..ELECTION_BOUND {
        c.tick_only(&[1]);
        if granted(&c).is_some() {
            break;
        }
    }
    let (voter, candidate, term) = granted(&c).expect("node 1 campaigned and got a vote");
    c.crash(voter);
    c.start(voter);
    let hs = c.raft(voter).hard_state();
    assert_eq!(
        (hs.term, hs.vote),
        (term, Some(candidate)),
        "the vote was not durable"
    );
}

/// §5.4.1, the election restriction: a voter refuses a candidate whose log is
/// less up to date than its own, comparing the last entries' terms first and
/// the lengths only on equal terms. Node 1's log is longer but ends in term 1;
/// nodes 2 and 3 end in term 2 (committed). Voting on length alone would elect
/// node 1 and let it overwrite a committed entry.
#[test]
fn a_longer_log_with_an_older_last_term_does_not_win_an_election() {
    let config = Config::new(1, vec![1, 2, 3]);
    let hs = |commit| HardState {
        term: 2,
        vote: None,
        commit,
    };
    let states = vec![
        (
            hs(1),
            vec![entry(1, 1), entry(2, 1), entry(3, 1), entry(4, 1)],
        ),
        (hs(2), vec![entry(1, 1), entry(2, 2)]),
        (hs(2), vec![entry(1, 1), entry(2, 2)]),
    ];
    let mut c = Cluster::with_logs(config, SEED, states);
    // Only node 1 sees time pass: it campaigns again and again.
    for _ in 0..ELECTION_BOUND {
        c.tick_only(&[1]);
        assert_ne!(
            c.raft(1).role(),
            Role::Leader,
            "node 1 won with an older last term: {:?}",
            terms(&c)
        );
    }
    for id in [2, 3] {
        assert_ne!(c.raft(id).vote(), Some(1), "node {id} voted for node 1");
        assert_eq!(c.raft(id).log().term(2), Some(2), "node {id} lost index 2");
    }
    // Once the others see time pass, one of them leads and node 1's tail goes.
    c.check_liveness(ELECTION_BOUND);
    assert_eq!(c.raft(1).log().term(2), Some(2));
}
