//! Messages from a buggy or hostile peer (any field at any value, extremes
//! included) must never crash a node: the runtime hands the core whatever decoded.
//! Safety cannot be promised against a lying peer (Raft is not Byzantine-tolerant),
//! but a panic would take the node down, so this checks there is none.

mod sim;

use raftlb::raft::{
    AppendResult, Entry, EntryKind, Message, MessageBody, Rng, SnapshotMeta, MAX_TERM_OR_INDEX,
};
use sim::Cluster;

fn value(rng: &mut Rng) -> u64 {
    match rng.range(0, 6) {
        0 => 0,
        1 => u64::MAX,
        2 => u64::MAX - rng.range(0, 3),
        3 => rng.range(0, 5),
        _ => rng.range(0, 200),
    }
}

fn body(rng: &mut Rng) -> MessageBody {
    let flag = |rng: &mut Rng| rng.chance(1, 2);
    match rng.range(0, 11) {
        0 => MessageBody::RequestVote {
            pre_vote: flag(rng),
            last_log_index: value(rng),
            last_log_term: value(rng),
            transfer: flag(rng),
            bound: flag(rng).then(|| if flag(rng) { 1 } else { value(rng) }),
        },
        1 => MessageBody::RequestVoteResponse {
            pre_vote: flag(rng),
            granted: flag(rng),
        },
        2 => {
            let prev_log_index = value(rng);
            let first = if rng.chance(3, 4) {
                prev_log_index.wrapping_add(1)
            } else {
                value(rng)
            };
            let entries = (0..rng.range(0, 4))
                .map(|i| Entry {
                    term: value(rng),
                    index: first.wrapping_add(i),
                    kind: if flag(rng) {
                        EntryKind::Noop
                    } else {
                        EntryKind::Command
                    },
                    data: vec![0; rng.range(0, 16) as usize],
                })
                .collect();
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term: value(rng),
                entries,
                leader_commit: value(rng),
            }
        }
        3 => MessageBody::AppendEntriesResponse {
            result: if flag(rng) {
                AppendResult::Accepted {
                    match_index: value(rng),
                }
            } else {
                AppendResult::Rejected {
                    rejected_index: value(rng),
                    hint_term: value(rng),
                    hint_index: value(rng),
                }
            },
        },
        4 => MessageBody::Heartbeat {
            commit: value(rng),
            read_seq: value(rng),
        },
        5 => MessageBody::HeartbeatResponse {
            read_seq: value(rng),
        },
        6 => MessageBody::InstallSnapshot {
            membership: None,
            meta: SnapshotMeta {
                index: value(rng),
                term: value(rng),
            },
            offset: value(rng),
            total_len: value(rng),
            chunk: vec![0; rng.range(0, 32) as usize],
        },
        7 => MessageBody::InstallSnapshotResponse {
            snapshot_index: value(rng),
            next_offset: value(rng),
            done: flag(rng),
        },
        8 => MessageBody::ReadIndex { ctx: value(rng) },
        9 => MessageBody::ReadIndexResponse {
            ctx: value(rng),
            index: flag(rng).then(|| value(rng)),
        },
        _ => MessageBody::TimeoutNow,
    }
}

#[test]
fn garbage_messages_from_peers_never_crash_a_node() {
    let (mut installed, mut hostile) = (0, 0);
    for seed in 0..200 {
        let mut c = Cluster::new(3, seed);
        c.wait_for_leader(200);
        for _ in 0..5 {
            c.commit_one(200);
        }
        // A lying peer breaks Raft's assumptions; the oracle would rightly object.
        c.checks = false;
        let mut rng = Rng::new(seed);
        for _ in 0..5_000 {
            let to = rng.range(1, 4);
            let from = rng.range(0, 5); // 0 and 4 are not members
            if !c.is_up(to) {
                continue;
            }
            // Mostly terms the node listens to, sometimes anything at all.
            let current = c.raft(to).term();
            let term = match rng.range(0, 4) {
                0 | 1 => current,
                2 => current + 1,
                _ => value(&mut rng),
            };
            let msg = Message {
                from,
                incarnation: 1,
                to,
                term,
                body: body(&mut rng),
            };
            hostile += 1;
            c.raft_mut(to).step(msg);
            c.process_ready(to);
            if rng.chance(1, 10) {
                c.tick();
            }
        }
        installed += c.stats.snapshots_installed;
    }
    eprintln!("{hostile} hostile messages stepped, {installed} snapshots installed");
    assert!(
        installed > 0,
        "no hostile snapshot got through: the test misses that path"
    );
}

/// A forged snapshot (chunks claiming to come from the leader, in its term, that
/// the state machine cannot decode) used to be installed by the core, written to
/// the data dir by the caller and only then decoded: the node stopped and could
/// not start again. Now it is refused before anything is written, the node keeps
/// its log, restarts from its data dir, and still takes the leader's real
/// snapshot later.
#[test]
fn a_snapshot_the_state_machine_cannot_decode_is_never_installed_or_written() {
    let mut c = Cluster::new(3, 11);
    let leader = c.wait_for_leader(200);
    for _ in 0..5 {
        c.commit_one(200);
    }
    let victim = c.other_than(leader);
    let (term, last_index) = (c.raft(victim).term(), c.raft(victim).log().last_index());
    let meta = SnapshotMeta {
        index: last_index + 100,
        term,
    };
    let forged: Vec<u8> = (0..20).collect(); // not whole 8-byte words
    for (offset, chunk) in [(0u64, &forged[..10]), (10, &forged[10..])] {
        let body = MessageBody::InstallSnapshot {
            membership: None,
            meta,
            offset,
            total_len: forged.len() as u64,
            chunk: chunk.to_vec(),
        };
        let msg = Message {
            from: leader,
            incarnation: 1,
            to: victim,
            term,
            body,
        };
        c.raft_mut(victim).step(msg);
        c.process_ready(victim);
    }
    assert_eq!(c.raft(victim).snapshots_refused(), 1);
    assert_eq!(c.stats.snapshots_installed, 0);
    assert_eq!(c.raft(victim).log().last_index(), last_index);
    // The data dir still opens, and its state machine restores.
    c.crash(victim);
    c.start(victim);
    assert_eq!(c.raft(victim).log().last_index(), last_index);
    // A real snapshot still gets through: the victim misses enough entries for
    // the leader to compact past them, then catches up.
    c.isolate(victim);
    for _ in 0..60 {
        c.commit_one(200);
    }
    assert!(c.raft(leader).log().first_index() > last_index + 1);
    c.heal();
    c.check_liveness(400);
    assert!(c.stats.snapshots_installed >= 1, "{}", c.dump());
}

/// The wedge of issue 12: forged heartbeats with a term just under the bound
/// were obeyed by every node, whose next PreVote (term + 1) every peer then
/// refused as malformed: no leader, for good. Now a term that far ahead is not
/// listened to, and the cluster keeps electing leaders, not only once.
#[test]
fn a_forged_term_just_under_the_bound_does_not_wedge_elections() {
    let mut c = Cluster::new(3, 5);
    let leader = c.wait_for_leader(200);
    c.commit_one(200);
    let forged_term = MAX_TERM_OR_INDEX - 1;
    for to in c.ids() {
        let from = if to == leader {
            c.other_than(leader)
        } else {
            leader
        };
        let body = MessageBody::Heartbeat {
            commit: 0,
            read_seq: 0,
        };
        let msg = Message {
            from,
            incarnation: 1,
            to,
            term: forged_term,
            body,
        };
        c.raft_mut(to).step(msg);
        c.process_ready(to);
    }
    c.check_liveness(400);
    let leader = c.wait_for_leader(200);
    c.crash(leader);
    let next = c.wait_for_leader(400);
    assert_ne!(next, leader);
    assert!(
        c.up_ids().iter().all(|&id| c.raft(id).term() < 1000),
        "{}",
        c.dump()
    );
}
