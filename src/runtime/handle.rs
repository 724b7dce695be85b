//! [`NodeHandle`]: the one narrow handle callers get on a running node.
//!
//! The HTTP side (and anything else outside the runtime) sees a node through
//! these few verbs: who it is, what it sees of Raft and the agreed table, and
//! the requests it hands to the event loop (a report, a note write or read, a
//! server to forget), each with a bound on how long it may wait. The channel to
//! the loop, the loop's inputs and the locks behind the view stay inside the
//! runtime, so a caller cannot block the loop or read a half-made state.

use std::sync::{Arc, RwLockReadGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::event_loop::LoopInput;
use super::forget::ForgetOutcome;
use super::members::{MemberOp, MemberOutcome};
use super::notes::NoteOutcome;
use super::shared::{LoopCounters, RaftView, Shared};
use crate::auth::Auth;
use crate::nodes::Nodes;
use crate::raft::NodeId;
use crate::report::{Report, MAX_SERVER_ID_BYTES};
use crate::table::LoadTable;

/// How long a note request waits past its deadline for the loop's own answer:
/// the loop answers every request by its deadline (it expires them on its
/// 10 ms tick); the extra second only guards against a loop that stopped.
const ANSWER_GRACE: Duration = Duration::from_secs(1);

/// A running node, as its callers see it. Cheap to clone (two reference counts).
#[derive(Clone)]
pub struct NodeHandle {
    shared: Arc<Shared>,
    input: Sender<LoopInput>,
}

/// Why the loop did not take a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotTaken {
    /// Its queue is full: the node is overloaded (503; the daemon sends again).
    QueueFull,
    /// The loop has stopped: the node is shutting down (503).
    Stopping,
}

impl NodeHandle {
    pub(super) fn new(shared: Arc<Shared>, input: Sender<LoopInput>) -> NodeHandle {
        NodeHandle { shared, input }
    }

    /// This node's Raft id.
    pub fn me(&self) -> NodeId {
        self.shared.me
    }

    /// The membership (nodes.txt).
    pub fn nodes(&self) -> &Nodes {
        &self.shared.nodes
    }

    /// The nodes.txt name of a Raft id.
    pub fn name_of(&self, id: NodeId) -> Option<String> {
        self.shared.name_of(id)
    }

    /// The cluster key (or `--insecure`) reports and admin requests are checked with.
    pub fn auth(&self) -> &Auth {
        &self.shared.auth
    }

    /// The largest N this node serves (`--max-n`).
    pub fn max_n(&self) -> u64 {
        self.shared.max_n
    }

    /// Raft as the event loop last saw it (a copy).
    pub fn view(&self) -> RaftView {
        self.shared.view()
    }

    /// The applied load table and note, under a read lock: hold it briefly and
    /// never take a second one while holding it (a waiting writer, the loop,
    /// would deadlock between them).
    pub fn table(&self) -> RwLockReadGuard<'_, LoadTable> {
        self.shared.table()
    }

    /// What the UDP thread and the event loop counted.
    pub fn counters(&self) -> &LoopCounters {
        &self.shared.counters
    }

    /// Hands a validated (and authenticated) report to the loop, which proposes
    /// it or forwards it to the leader; never waits.
    pub fn submit_report(&self, report: Report) -> Result<(), NotTaken> {
        match self.input.try_send(LoopInput::Report(report)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(NotTaken::QueueFull),
            Err(TrySendError::Disconnected(_)) => Err(NotTaken::Stopping),
        }
    }

    /// Writes the note: waits until it is committed and applied here, or until
    /// `deadline` (then "unavailable"; the write may still commit later).
    pub fn write_note(&self, text: String, deadline: Instant) -> NoteOutcome {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.ask_note(
            LoopInput::SetNote {
                text,
                reply,
                deadline,
            },
            answer,
            deadline,
        )
    }

    /// Reads the note linearizably (a read-index round), or "unavailable" by
    /// `deadline`.
    pub fn read_note(&self, deadline: Instant) -> NoteOutcome {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.ask_note(LoopInput::ReadNote { reply, deadline }, answer, deadline)
    }

    fn ask_note(
        &self,
        input: LoopInput,
        answer: Receiver<NoteOutcome>,
        deadline: Instant,
    ) -> NoteOutcome {
        self.ask(input, answer, deadline, NoteOutcome::Unavailable)
    }

    /// Hands `input` to the loop and waits for its answer on `answer` until
    /// `deadline` and [`ANSWER_GRACE`]; `unavailable` makes the answer when
    /// the queue is full, the loop has stopped, or it did not answer.
    fn ask<T>(
        &self,
        input: LoopInput,
        answer: Receiver<T>,
        deadline: Instant,
        unavailable: fn(String) -> T,
    ) -> T {
        match self.input.try_send(input) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return unavailable("node busy: request queue full, try again".into())
            }
            Err(TrySendError::Disconnected(_)) => {
                return unavailable("this node is stopping".into())
            }
        }
        answer
            .recv_deadline(deadline + ANSWER_GRACE)
            .unwrap_or_else(|_| {
                unavailable(
                    "no answer from this node's event loop in time (stopping or overloaded)".into(),
                )
            })
    }

    /// Changes the membership (`runtime::members`): waits until every step
    /// committed, or the change could not start, or `deadline`.
    pub fn change_members(&self, op: MemberOp, deadline: Instant) -> MemberOutcome {
        let (reply, answer) = crossbeam_channel::bounded(1);
        let input = LoopInput::ChangeMembers {
            op,
            reply,
            deadline,
        };
        self.ask(input, answer, deadline, MemberOutcome::Unavailable)
    }

    /// Removes `server` from the agreed table by a committed entry; waits until
    /// it is applied here, or until `deadline`.
    /// 200 for `Forgotten`, 404 for `UnknownServer`, 503 for `Unavailable`.
    pub fn forget(&self, server: &str, deadline: Instant) -> ForgetOutcome {
        if server.is_empty() || server.len() > MAX_SERVER_ID_BYTES {
            return ForgetOutcome::UnknownServer; // no report could have named it
        }
        let (reply, answer) = crossbeam_channel::bounded(1);
        let input = LoopInput::Forget {
            server: server.to_string(),
            reply,
            deadline,
        };
        self.ask(input, answer, deadline, ForgetOutcome::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::shared::SharedSettings;

    fn handle(queue: usize) -> (NodeHandle, crossbeam_channel::Receiver<LoopInput>) {
        let nodes = Nodes::parse("A 127.0.0.1:1\nB 127.0.0.1:2\nC 127.0.0.1:3\n", "test")
            .expect("valid nodes");
        let settings = SharedSettings {
            me: 1,
            nodes,
            max_n: 100,
            auth: Auth::Insecure,
            epoch: 1,
        };
        let shared = Arc::new(Shared::new(settings, LoadTable::new()));
        let (tx, rx) = crossbeam_channel::bounded(queue);
        (NodeHandle::new(shared, tx), rx)
    }

    fn unavailable(outcome: NoteOutcome) -> String {
        match outcome {
            NoteOutcome::Unavailable(reason) => reason,
            other => panic!("expected unavailable, got {other:?}"),
        }
    }

    /// The loop's answer is the caller's, whatever thread gives it.
    #[test]
    fn a_note_write_waits_for_the_loops_answer() {
        let (node, rx) = handle(1);
        let loop_side = std::thread::spawn(move || match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(LoopInput::SetNote { text, reply, .. }) => {
                assert_eq!(text, "hello");
                reply
                    .send(NoteOutcome::Saved { index: 7 })
                    .expect("caller waits");
            }
            other => panic!("expected a note write, got {other:?}"),
        });
        let deadline = Instant::now() + Duration::from_secs(3);
        assert_eq!(
            node.write_note("hello".into(), deadline),
            NoteOutcome::Saved { index: 7 }
        );
        loop_side.join().expect("the loop side checked the input");
    }

    /// A full queue and a stopped loop are both said at once, never waited on.
    #[test]
    fn a_full_queue_or_a_stopped_loop_answers_at_once() {
        let (node, rx) = handle(1);
        let report =
            Report::parse(br#"{"server":"s","url":"http://127.0.0.1:1","cpu":1,"wait":0,"seq":1}"#)
                .expect("a valid report");
        assert_eq!(node.submit_report(report.clone()), Ok(()));
        assert_eq!(node.submit_report(report.clone()), Err(NotTaken::QueueFull));
        let far = Instant::now() + Duration::from_secs(60);
        let started = Instant::now();
        assert!(unavailable(node.read_note(far)).contains("queue full"));
        drop(rx);
        assert_eq!(node.submit_report(report), Err(NotTaken::Stopping));
        assert!(unavailable(node.write_note("x".into(), far)).contains("stopping"));
        assert!(started.elapsed() < Duration::from_secs(5), "never waited");
    }

    /// A loop that takes a request and then stops without answering (the
    /// process is shutting down) does not hold the caller past its deadline.
    #[test]
    fn a_loop_that_never_answers_is_given_up_on_after_the_deadline() {
        let (node, rx) = handle(1);
        let started = Instant::now();
        let outcome = node.read_note(started + Duration::from_millis(50));
        assert!(unavailable(outcome).contains("no answer"));
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(started.elapsed() < Duration::from_millis(50) + ANSWER_GRACE * 3);
        drop(rx);
    }

    /// A forget is asked and waited for like a note request; a server no
    /// report could have named is unknown at once.
    #[test]
    fn a_forget_is_answered_by_the_loop_or_unavailable_or_unknown_at_once() {
        let (node, rx) = handle(1);
        let deadline = Instant::now() + Duration::from_millis(10);
        let outcome = node.forget("a", deadline);
        assert!(matches!(outcome, ForgetOutcome::Unavailable(ref r) if r.contains("no answer")));
        assert!(matches!(rx.try_recv(), Ok(LoopInput::Forget { .. })));
        drop(rx);
        let outcome = node.forget("a", deadline);
        assert!(matches!(outcome, ForgetOutcome::Unavailable(ref r) if r.contains("stopping")));
        assert_eq!(node.forget("", deadline), ForgetOutcome::UnknownServer);
        let long = "x".repeat(MAX_SERVER_ID_BYTES + 1);
        assert_eq!(node.forget(&long, deadline), ForgetOutcome::UnknownServer);
    }
}
