//! Forgetting a server: removing it from the agreed table by a committed
//! `table::Command::Forget`, on request (`NodeHandle::forget`, for `POST /admin/forget`).
//! (The leader's own forgetting of servers dead for `--forget-after` is in
//! `intake.rs`, beside marking them dead.)
//!
//! The node that takes a request answers it once it has *applied* a `Forget` of
//! that server, whoever proposed it: forgetting is idempotent, so any such
//! entry fulfils the request, and a request can be sent again freely. The
//! leader proposes it at once; a follower sends it to the leader in a
//! `ForgetServer` datagram, again every [`FORGET_RESEND`] until it applies one
//! (a datagram may be lost, a leader may change). A server this node's applied
//! table does not hold is "unknown" at once; a request not applied by its
//! deadline is "unavailable" (it may still happen).
//!
//! [`ForgetRequests`] holds the waiting requests and decides, with no Raft or
//! socket of its own (unit-tested below): it hands back what to do
//! ([`ForgetAction`]: propose or send), and the node logic (`event_loop.rs`)
//! does it.

use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::raft::{NodeId, Role};
use crate::report::MAX_SERVER_ID_BYTES;
use crate::table::{Command, LoadTable};
use crate::wire::Datagram;

/// A forward to the leader may have been lost after this long: sent again.
pub(crate) const FORGET_RESEND: Duration = Duration::from_millis(200);
/// Requests waiting at once; beyond it, "unavailable" at once, so a flood of
/// requests cannot grow the loop's memory.
pub(crate) const MAX_FORGET_WAITING: usize = 64;
/// Bounds of `--forget-after`: at least 100 ms (tests and demos: a server is
/// dead for `--dead-after-ms` first anyway), at most a year (longer is "never",
/// which keeps the table growing).
pub const FORGET_AFTER_MIN: Duration = Duration::from_millis(100);
pub const FORGET_AFTER_MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// What a forget request came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForgetOutcome {
    /// A `Forget` of the server is committed and applied on this node (200).
    Forgotten,
    /// This node's applied table has no such server (404).
    UnknownServer,
    /// No leader applied it in time, or the node is busy or stopping (503); the
    /// reason says which. The server may still be forgotten later.
    Unavailable(String),
}

/// Where the event loop answers one forget request.
pub(crate) type ForgetReply = Sender<ForgetOutcome>;

/// Parses `--forget-after`: a number with a unit, `500ms`, `30s`, `90m`,
/// `24h`, `7d`, or a plain number of milliseconds; within
/// [`FORGET_AFTER_MIN`]..=[`FORGET_AFTER_MAX`].
pub fn parse_forget_after(text: &str) -> Result<Duration, BadDuration> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let bad = || BadDuration::Shape(text.to_string());
    let value: u64 = number.parse().map_err(|_| bad())?;
    let unit_ms: u64 = match unit {
        "" | "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    let ms = value.checked_mul(unit_ms).ok_or_else(bad)?;
    let duration = Duration::from_millis(ms);
    if !(FORGET_AFTER_MIN..=FORGET_AFTER_MAX).contains(&duration) {
        return Err(BadDuration::OutOfRange(text.to_string()));
    }
    Ok(duration)
}

/// Why a `--forget-after` was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadDuration {
    /// Not a number with one of the units.
    Shape(String),
    /// Outside [`FORGET_AFTER_MIN`]..=[`FORGET_AFTER_MAX`].
    OutOfRange(String),
}

impl std::fmt::Display for BadDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadDuration::Shape(text) => write!(
                f,
                "bad duration {text:?}: use e.g. 24h, 90m, 30s, 500ms or plain ms"
            ),
            BadDuration::OutOfRange(text) => {
                write!(f, "duration {text:?} out of range: between 100ms and 365d")
            }
        }
    }
}

impl std::error::Error for BadDuration {}

/// One request waiting for its `Forget` to be applied here.
#[derive(Debug)]
struct Waiting {
    server: String,
    reply: ForgetReply,
    deadline: Instant,
    /// When it was last proposed or forwarded (None: not yet).
    sent_at: Option<Instant>,
}

/// The forget requests of one node; owned by the event loop.
#[derive(Debug, Default)]
pub(crate) struct ForgetRequests {
    waiting: Vec<Waiting>,
}

impl ForgetRequests {
    /// Takes a request in, or answers it at once: unknown to `table` (this
    /// node's applied table), or too many waiting.
    pub fn add(
        &mut self,
        server: String,
        reply: ForgetReply,
        deadline: Instant,
        table: &LoadTable,
    ) {
        if table.get(&server).is_none() {
            let _ = reply.send(ForgetOutcome::UnknownServer);
        } else if self.waiting.len() >= MAX_FORGET_WAITING {
            let reason = format!("{MAX_FORGET_WAITING} forget requests already wait; try again");
            let _ = reply.send(ForgetOutcome::Unavailable(reason));
        } else {
            self.waiting.push(Waiting {
                server,
                reply,
                deadline,
                sent_at: None,
            });
        }
    }

    /// The servers to propose (leader) or forward (follower) now: requests
    /// never sent, or sent [`FORGET_RESEND`] ago; each server once.
    pub fn due(&mut self, now: Instant) -> Vec<String> {
        let mut due: Vec<String> = Vec::new();
        for w in &mut self.waiting {
            let resend = w
                .sent_at
                .is_none_or(|t| now.saturating_duration_since(t) >= FORGET_RESEND);
            if resend {
                w.sent_at = Some(now);
                if !due.contains(&w.server) {
                    due.push(w.server.clone());
                }
            }
        }
        due
    }

    /// This node applied a `Forget` of each of `servers`: their requests are done.
    pub fn applied(&mut self, servers: &[String]) {
        self.waiting.retain(|w| {
            let done = servers.contains(&w.server);
            if done {
                let _ = w.reply.send(ForgetOutcome::Forgotten);
            }
            !done
        });
    }

    /// A snapshot replaced the table: a server it does not hold is forgotten
    /// (the `Forget` may be inside the snapshot, never to be applied here).
    pub(crate) fn snapshot_installed(&mut self, table: &LoadTable) {
        let gone: Vec<String> = self
            .waiting
            .iter()
            .filter(|w| table.get(&w.server).is_none())
            .map(|w| w.server.clone())
            .collect();
        self.applied(&gone);
    }

    /// Answers the requests whose deadline passed.
    pub(crate) fn expire(&mut self, now: Instant) {
        self.waiting.retain(|w| {
            let keep = w.deadline > now;
            if !keep {
                let reason = "not applied in time (no leader?); the server may still be forgotten";
                let _ = w.reply.send(ForgetOutcome::Unavailable(reason.into()));
            }
            keep
        });
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// What to do now: requests past their deadline answered, and each server
    /// due proposed (this node leads) or forwarded to the leader (with no
    /// leader known, sent again after [`FORGET_RESEND`] to whoever leads then).
    pub(crate) fn start(
        &mut self,
        now: Instant,
        me: NodeId,
        leader: Option<NodeId>,
    ) -> Vec<ForgetAction> {
        if self.is_empty() {
            return Vec::new();
        }
        self.expire(now);
        let Some(leader) = leader else {
            return Vec::new();
        };
        self.due(now)
            .into_iter()
            .map(|server| {
                if leader == me {
                    ForgetAction::Propose(Command::Forget { server })
                } else {
                    ForgetAction::Send {
                        to: leader,
                        datagram: Datagram::ForgetServer { from: me, server },
                    }
                }
            })
            .collect()
    }

    /// A follower forwarded a forget request: proposed if this node leads,
    /// else dropped (the follower sends it again to the leader it learns of).
    pub(crate) fn forwarded(role: Role, server: String) -> Option<ForgetAction> {
        (role == Role::Leader && server.len() <= MAX_SERVER_ID_BYTES)
            .then_some(ForgetAction::Propose(Command::Forget { server }))
    }
}

/// What the forget requests ask of the node.
#[derive(Debug, PartialEq)]
pub(crate) enum ForgetAction {
    /// Propose this `Forget` (this node leads); a refused one is sent again later.
    Propose(Command),
    /// Send `datagram` to node `to` (the leader).
    Send { to: NodeId, datagram: Datagram },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Report;

    fn table_of(ids: &[&str]) -> LoadTable {
        let reports = ids
            .iter()
            .map(|id| Report {
                server: id.to_string(),
                url: "http://127.0.0.1:1".into(),
                cpu: 1.0,
                wait: 0.0,
                seq: 1,
            })
            .collect();
        let mut table = LoadTable::new();
        table.apply(&Command::Reports(reports), Instant::now());
        table
    }

    fn request(
        requests: &mut ForgetRequests,
        server: &str,
        deadline: Instant,
        table: &LoadTable,
    ) -> crossbeam_channel::Receiver<ForgetOutcome> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        requests.add(server.into(), tx, deadline, table);
        rx
    }

    #[test]
    fn an_unknown_server_is_answered_at_once() {
        let mut requests = ForgetRequests::default();
        let later = Instant::now() + Duration::from_secs(3);
        let rx = request(&mut requests, "nope", later, &table_of(&["a"]));
        assert_eq!(rx.try_recv(), Ok(ForgetOutcome::UnknownServer));
        assert!(requests.is_empty());
    }

    #[test]
    fn a_request_is_answered_when_a_forget_of_its_server_is_applied() {
        let table = table_of(&["a", "b"]);
        let mut requests = ForgetRequests::default();
        let now = Instant::now();
        let rx_a = request(&mut requests, "a", now + Duration::from_secs(3), &table);
        let rx_b = request(&mut requests, "b", now + Duration::from_secs(3), &table);
        requests.applied(&["a".into()]);
        assert_eq!(rx_a.try_recv(), Ok(ForgetOutcome::Forgotten));
        assert!(rx_b.try_recv().is_err(), "b still waits");
        let mut after = table_of(&["a"]);
        after.apply(&Command::Forget { server: "a".into() }, now);
        requests.snapshot_installed(&after);
        assert_eq!(rx_b.try_recv(), Ok(ForgetOutcome::Forgotten));
        assert!(requests.is_empty());
    }

    #[test]
    fn a_request_is_sent_again_until_applied_then_expires_as_unavailable() {
        let table = table_of(&["a"]);
        let mut requests = ForgetRequests::default();
        let t0 = Instant::now();
        let rx = request(&mut requests, "a", t0 + Duration::from_secs(1), &table);
        let _twin = request(&mut requests, "a", t0 + Duration::from_secs(1), &table);
        assert_eq!(requests.due(t0), ["a"], "one send for both requests");
        assert!(requests.due(t0 + FORGET_RESEND / 2).is_empty());
        assert_eq!(requests.due(t0 + FORGET_RESEND), ["a"]);
        requests.expire(t0 + Duration::from_millis(999));
        assert!(rx.try_recv().is_err());
        requests.expire(t0 + Duration::from_secs(1));
        assert!(matches!(rx.try_recv(), Ok(ForgetOutcome::Unavailable(_))));
        assert!(requests.is_empty());
    }

    #[test]
    fn waiting_requests_are_bounded() {
        let table = table_of(&["a"]);
        let mut requests = ForgetRequests::default();
        let later = Instant::now() + Duration::from_secs(3);
        let waiting: Vec<_> = (0..MAX_FORGET_WAITING)
            .map(|_| request(&mut requests, "a", later, &table))
            .collect();
        assert!(waiting.iter().all(|rx| rx.try_recv().is_err()));
        let refused = request(&mut requests, "a", later, &table);
        assert!(matches!(
            refused.try_recv(),
            Ok(ForgetOutcome::Unavailable(_))
        ));
    }

    #[test]
    fn forget_after_takes_a_unit_or_plain_ms_within_bounds() {
        let ok = [
            ("24h", 86_400_000),
            ("90m", 5_400_000),
            ("30s", 30_000),
            ("1500ms", 1_500),
            ("500ms", 500),
            ("2000", 2_000),
            ("7d", 604_800_000),
        ];
        for (text, ms) in ok {
            assert_eq!(
                parse_forget_after(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        for bad in [
            "",
            "h",
            "24 h",
            "1.5h",
            "-1s",
            "24H",
            "5x",
            "50ms",
            "0",
            "366d",
            "99999999999999999999",
        ] {
            assert!(parse_forget_after(bad).is_err(), "{bad}");
        }
    }

    /// A leader proposes a due forget, a follower forwards it to the leader it
    /// knows, and with no leader it waits; a forwarded one is proposed only by
    /// a leader.
    #[test]
    fn due_requests_become_proposals_or_forwards_to_the_leader() {
        let table = table_of(&["a"]);
        let now = Instant::now();
        let later = now + Duration::from_secs(3);
        let mut requests = ForgetRequests::default();
        let _rx = request(&mut requests, "a", later, &table);
        assert!(requests.start(now, 1, None).is_empty(), "no leader: waits");
        let forget_a = Command::Forget { server: "a".into() };
        assert_eq!(
            requests.start(now, 1, Some(1)),
            vec![ForgetAction::Propose(forget_a.clone())]
        );
        assert!(
            requests.start(now, 1, Some(1)).is_empty(),
            "not again at once"
        );
        let resend = now + FORGET_RESEND;
        assert_eq!(
            requests.start(resend, 1, Some(2)),
            vec![ForgetAction::Send {
                to: 2,
                datagram: Datagram::ForgetServer {
                    from: 1,
                    server: "a".into()
                }
            }]
        );
        assert_eq!(
            ForgetRequests::forwarded(Role::Leader, "a".into()),
            Some(ForgetAction::Propose(forget_a))
        );
        assert_eq!(ForgetRequests::forwarded(Role::Follower, "a".into()), None);
        let long = "x".repeat(MAX_SERVER_ID_BYTES + 1);
        assert_eq!(ForgetRequests::forwarded(Role::Leader, long), None);
    }
}
