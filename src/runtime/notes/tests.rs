//! The decisions about waiting note requests, without a cluster: when a write is
//! answered, when it is sent again (only when it certainly did not happen), and
//! what a read waits for.

use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::*;

fn requests() -> NoteRequests {
    NoteRequests::new(1, 1000)
}

/// Request ids name a write when it is applied: two nodes never share one,
/// and two runs of a node whose seeds differ by a little (the simulator's
/// restarts) start far apart.
#[test]
fn request_ids_of_different_nodes_or_nearby_seeds_never_meet() {
    let start = |me, seed| NoteRequests::new(me, seed).next_request;
    assert_eq!(start(3, 42) >> 56, 3, "the node's id on top");
    let mut at_the_end = NoteRequests::new(3, 42);
    at_the_end.next_request = (3 << 56) | REQUEST_COUNTER_MASK;
    at_the_end.add_write("x".into(), crossbeam_channel::bounded(1).0, Instant::now());
    assert_eq!(
        at_the_end.next_request,
        3 << 56,
        "the counter wraps below the id"
    );
    assert_ne!(start(1, 42) >> 56, start(2, 42) >> 56);
    for seed in [0, 1, 7919, 7919 * 2, u64::MAX] {
        for other in [seed ^ 7919, seed.wrapping_add(1), seed ^ (7919 * 3)] {
            let gap = start(1, seed).abs_diff(start(1, other));
            assert!(gap > 1 << 32, "seeds {seed} and {other}: ids {gap} apart");
        }
    }
}

/// Adds a write and takes it out as the loop would to send it.
fn write(notes: &mut NoteRequests, text: &str, now: Instant) -> (Write, Receiver<NoteOutcome>) {
    let (tx, rx) = crossbeam_channel::bounded(1);
    notes.add_write(text.into(), tx, now + NOTE_TIMEOUT);
    (notes.next_unsent().expect("just added"), rx)
}

fn outcome(rx: &Receiver<NoteOutcome>) -> Option<NoteOutcome> {
    rx.try_recv().ok()
}

#[test]
fn a_write_is_saved_when_its_request_is_applied_and_not_before() {
    let (mut notes, metrics, now) = (requests(), LoopCounters::default(), Instant::now());
    let (w, rx) = write(&mut notes, "a", now);
    let request = w.request;
    notes.mark_sent(w, 3, Some(2));
    notes.applied(&[(request + 1, 7)], Some(3), &metrics);
    assert_eq!(outcome(&rx), None, "another write of the same term");
    notes.applied(&[(request, 8)], Some(3), &metrics);
    assert_eq!(outcome(&rx), Some(NoteOutcome::Saved { index: 8 }));
    assert!(notes.is_empty());
}

#[test]
fn a_write_is_sent_again_only_once_a_later_term_is_applied_without_it() {
    let (mut notes, metrics, now) = (requests(), LoopCounters::default(), Instant::now());
    let (w, rx) = write(&mut notes, "a", now);
    let request = w.request;
    notes.mark_sent(w, 3, None);
    // Entries of its own term without it: it may still commit.
    notes.applied(&[], Some(3), &metrics);
    assert!(notes.next_unsent().is_none());
    // An entry of term 4 is applied: no entry of term 3 can commit any more.
    notes.applied(&[], Some(4), &metrics);
    let again = notes.next_unsent().expect("certainly lost: sent again");
    assert_eq!(again.request, request, "the same request id");
    assert_eq!(outcome(&rx), None, "the client still waits");
}

#[test]
fn a_refusal_counts_only_from_the_leader_it_was_sent_to_and_waits_for_a_tick() {
    let (mut notes, metrics, now) = (requests(), LoopCounters::default(), Instant::now());
    let (w, _rx) = write(&mut notes, "a", now);
    let request = w.request;
    notes.mark_sent(w, 3, Some(2));
    notes.refused_by(5, request);
    notes.tick(now, &metrics);
    assert!(
        notes.next_unsent().is_none(),
        "node 5 cannot speak for node 2"
    );
    notes.refused_by(2, request);
    assert!(
        notes.next_unsent().is_none(),
        "not at once: from the next tick"
    );
    notes.tick(now, &metrics);
    assert_eq!(notes.next_unsent().map(|w| w.request), Some(request));
}

#[test]
fn a_snapshot_makes_writes_of_its_term_or_earlier_unknown_and_later_ones_wait() {
    let (mut notes, metrics, now) = (requests(), LoopCounters::default(), Instant::now());
    let (old, old_rx) = write(&mut notes, "old", now);
    let (same, same_rx) = write(&mut notes, "same", now);
    let (new, new_rx) = write(&mut notes, "new", now);
    let new_request = new.request;
    notes.mark_sent(old, 2, Some(1));
    notes.mark_sent(same, 4, Some(1));
    notes.mark_sent(new, 5, Some(1));
    notes.snapshot_installed(4, &metrics);
    for rx in [&old_rx, &same_rx] {
        match outcome(rx) {
            Some(NoteOutcome::Unavailable(reason)) => {
                assert!(reason.contains("may or may not"), "{reason}")
            }
            other => panic!("expected unknown, got {other:?}"),
        }
    }
    // The term-4 write is not sent again when a term-5 entry follows.
    notes.applied(&[], Some(5), &metrics);
    assert!(notes.next_unsent().is_none());
    notes.applied(&[(new_request, 40)], Some(5), &metrics);
    assert_eq!(outcome(&new_rx), Some(NoteOutcome::Saved { index: 40 }));
}

#[test]
fn an_unsent_write_expires_as_not_written_a_sent_one_as_unknown() {
    let (mut notes, metrics, now) = (requests(), LoopCounters::default(), Instant::now());
    let (w, sent_rx) = write(&mut notes, "sent", now);
    notes.mark_sent(w, 1, Some(2));
    let (tx, unsent_rx) = crossbeam_channel::bounded(1);
    notes.add_write("never sent".into(), tx, now + NOTE_TIMEOUT);
    notes.tick(now + NOTE_TIMEOUT - Duration::from_millis(1), &metrics);
    assert_eq!(outcome(&unsent_rx), None, "not due yet");
    notes.tick(now + NOTE_TIMEOUT, &metrics);
    let reason = |rx: &Receiver<NoteOutcome>| match outcome(rx) {
        Some(NoteOutcome::Unavailable(reason)) => reason,
        other => panic!("expected 503, got {other:?}"),
    };
    assert!(reason(&unsent_rx).contains("was not written"));
    assert!(reason(&sent_rx).contains("may or may not"));
    assert!(notes.is_empty());
    assert_eq!(
        metrics
            .note_unavailable
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[test]
fn reads_of_one_round_share_one_index_and_wait_until_it_is_applied() {
    let (mut notes, metrics, now) = (requests(), LoopCounters::default(), Instant::now());
    let (tx1, rx1) = crossbeam_channel::bounded(1);
    let (tx2, rx2) = crossbeam_channel::bounded(1);
    notes.add_read(tx1, now + NOTE_TIMEOUT);
    notes.add_read(tx2, now + NOTE_TIMEOUT);
    let ctx = notes.start_read_round(now).expect("reads wait");
    assert_eq!(notes.start_read_round(now), None, "one round for both");
    notes.read_results(&[ReadState { ctx, index: 10 }], &[]);
    notes.finish_reads(9, || panic!("not due: no note needed"), &metrics);
    assert_eq!(outcome(&rx1), None, "index 10 is not applied at 9");
    notes.finish_reads(10, || "the note".to_string(), &metrics);
    for rx in [&rx1, &rx2] {
        assert_eq!(
            outcome(rx),
            Some(NoteOutcome::Read {
                text: "the note".into(),
                index: 10
            })
        );
    }
}

#[test]
fn a_failed_or_unanswered_read_is_asked_again_with_a_new_round() {
    let (mut notes, metrics, now) = (requests(), LoopCounters::default(), Instant::now());
    let (tx, rx) = crossbeam_channel::bounded(1);
    notes.add_read(tx, now + NOTE_TIMEOUT);
    let first = notes.start_read_round(now).expect("a read waits");
    notes.read_results(&[], &[ReadFailure { ctx: first }]);
    notes.tick(now, &metrics);
    let second = notes
        .start_read_round(now)
        .expect("asked again at the tick");
    assert_ne!(first, second);
    // No answer at all (a lost datagram): asked again after READ_RETRY_AFTER.
    notes.tick(now + READ_RETRY_AFTER / 2, &metrics);
    assert_eq!(notes.start_read_round(now), None, "not yet");
    notes.tick(now + READ_RETRY_AFTER, &metrics);
    let third = notes.start_read_round(now).expect("asked again");
    // A late answer to an abandoned round is ignored.
    notes.read_results(
        &[ReadState {
            ctx: first,
            index: 1,
        }],
        &[],
    );
    notes.finish_reads(1, || "x".into(), &metrics);
    assert_eq!(outcome(&rx), None);
    notes.read_results(
        &[ReadState {
            ctx: third,
            index: 1,
        }],
        &[],
    );
    notes.finish_reads(1, || "x".into(), &metrics);
    assert!(matches!(outcome(&rx), Some(NoteOutcome::Read { .. })));
}

#[test]
fn a_duplicated_forward_is_proposed_once_per_term() {
    let mut notes = requests();
    assert!(notes.first_forward(7, 42));
    notes.remember_forward(42);
    assert!(!notes.first_forward(7, 42), "the duplicate is dropped");
    assert!(
        notes.first_forward(8, 42),
        "a new term forgets: it was not proposed there"
    );
    for request in 0..(MAX_REMEMBERED_FORWARDS as u64 + 1) {
        notes.remember_forward(request);
    }
    assert!(
        notes.forwarded_to_me.len() <= MAX_REMEMBERED_FORWARDS,
        "bounded"
    );
}

fn leader(term: u64) -> NodeState {
    NodeState {
        me: 1,
        role: Role::Leader,
        term,
        leader: Some(1),
    }
}

fn follower(term: u64, of: Option<NodeId>) -> NodeState {
    NodeState {
        me: 3,
        role: Role::Follower,
        term,
        leader: of,
    }
}

/// A leader's writes become proposals in order; one the core refuses (a
/// transfer under way) is proposed again in the next round, one it takes is
/// answered when applied.
#[test]
fn a_leader_proposes_its_writes_and_a_refused_proposal_waits_for_the_next_round() {
    let (mut notes, metrics, now) = (requests(), LoopCounters::default(), Instant::now());
    let (tx, rx) = crossbeam_channel::bounded(1);
    notes.add_write("a".into(), tx, now + NOTE_TIMEOUT);
    notes.add_read(crossbeam_channel::bounded(1).0, now + NOTE_TIMEOUT);
    let actions = notes.start(now, leader(4));
    let [NoteAction::Propose { proposal, command }, NoteAction::ReadIndex(_)] = &actions[..] else {
        panic!("expected a proposal and a read round, got {actions:?}");
    };
    let Command::SetNote { text, request } = command else {
        panic!("expected SetNote, got {command:?}");
    };
    assert_eq!((text.as_str(), *proposal), ("a", Proposal::Own(*request)));
    assert_eq!(notes.proposed(*proposal, None, 1), None, "refused: waits");
    assert!(!notes.is_empty());
    let again = notes.start(now, leader(4));
    assert!(matches!(&again[..], [NoteAction::Propose { proposal: p, .. }] if p == proposal));
    assert_eq!(notes.proposed(*proposal, Some(4), 1), None);
    assert!(
        notes.start(now, leader(4)).is_empty(),
        "in the log: not again"
    );
    notes.applied(&[(*request, 9)], Some(4), &metrics);
    assert_eq!(outcome(&rx), Some(NoteOutcome::Saved { index: 9 }));
}

/// A follower forwards its writes to the leader it knows, and holds them while
/// it knows none.
#[test]
fn a_follower_forwards_to_the_leader_it_knows_and_waits_without_one() {
    let (mut notes, now) = (requests(), Instant::now());
    let (w, _rx) = write(&mut notes, "b", now);
    notes.unsent.push_back(w);
    assert!(notes.start(now, follower(6, None)).is_empty(), "no leader");
    let actions = notes.start(now, follower(6, Some(2)));
    let [NoteAction::Send { to: 2, datagram }] = &actions[..] else {
        panic!("expected one forward to node 2, got {actions:?}");
    };
    assert!(matches!(
        datagram,
        Datagram::ProposeNote { from: 3, term: 6, text, .. } if text == "b"
    ));
    assert!(
        notes.start(now, follower(6, Some(2))).is_empty(),
        "sent once"
    );
}

/// A leader proposes a forwarded write once however many copies arrive, and
/// refuses it (so the follower sends it again) when it does not lead in the
/// follower's term or the core refuses it.
#[test]
fn a_forwarded_write_is_proposed_once_or_refused_to_its_follower() {
    let mut notes = requests();
    let forward = |notes: &mut NoteRequests, node, term, request| {
        notes.forwarded(node, 3, term, request, "c".into())
    };
    let refused = |request| {
        Some(NoteAction::Send {
            to: 3,
            datagram: Datagram::NoteRefused { from: 1, request },
        })
    };
    assert_eq!(
        forward(&mut notes, leader(5), 4, 70),
        refused(70),
        "stale term"
    );
    let Some(NoteAction::Propose { proposal, .. }) = forward(&mut notes, leader(5), 5, 71) else {
        panic!("expected a proposal");
    };
    assert_eq!(notes.proposed(proposal, Some(5), 1), None);
    assert_eq!(forward(&mut notes, leader(5), 5, 71), None, "a duplicate");
    let Some(NoteAction::Propose { proposal, .. }) = forward(&mut notes, leader(5), 5, 72) else {
        panic!("expected a proposal");
    };
    assert_eq!(
        notes.proposed(proposal, None, 1),
        refused(72),
        "core refused"
    );
    let not_leader = NodeState {
        me: 1,
        ..follower(5, Some(2))
    };
    assert_eq!(forward(&mut notes, not_leader, 5, 73), refused(73));
}
