//! `POST /admin/forget`: an operator removes a server from the agreed table.
//!
//! The body is `{"server":"ID","at":MS}` and carries `X-Raftlb-Auth`, the
//! HMAC of the body under the cluster key (`raftlb server forget` signs it).
//! Checks, in order, each with its own one-line reason: the tag (401), the
//! JSON (400), `at` within `AT_WINDOW_MS` of this node's clock (401), and the
//! body not used before (401: [`UsedRequests`]). Then the event loop commits a
//! `Forget` (`runtime::forget`): 200 once applied here, 404 for a server the
//! table does not hold, 503 when no leader applied it in time.
//!
//! Why `at` and a replay set: a captured request is valid for ever under a
//! key that does not change, and someone who recorded one could forget a
//! server again after it came back. `at` bounds how long a request lives;
//! the set of bodies seen in that window makes it single-use on this node.
//! What it cannot stop: the same request replayed at another node within
//! 30 s, which asks again for what was just done (forgetting is idempotent).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::NodeHttp;
use crate::http::{self, Reply, Request};
use crate::runtime::{ForgetOutcome, MemberOp, MemberOutcome};

/// How far `at` may be from this node's clock, either way (SPEC: 30 s).
pub(crate) const AT_WINDOW_MS: u64 = 30_000;
/// Requests remembered at once. Only key holders get past the tag check, so
/// this bounds what a buggy script could make the node keep, not an attacker.
pub(crate) const USED_MAX: usize = 4096;
/// How long a forget request may wait for Raft: an election or two.
pub(crate) const FORGET_WAIT: Duration = Duration::from_secs(3);

/// The body of `POST /admin/forget`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForgetBody {
    server: String,
    at: u64,
}

/// The admin request bodies this node accepted within the last
/// 2 x `AT_WINDOW_MS`: a body seen again is refused. Pure (the clock is
/// passed in), so it is unit-tested below.
#[derive(Debug, Default)]
pub struct UsedRequests {
    /// (SHA-256 of the body, its `at`), in arrival order.
    seen: VecDeque<([u8; 32], u64)>,
}

impl UsedRequests {
    /// Records `body` (with its `at`) as used at `now_ms`, or says why it
    /// cannot be used: already used, or too many remembered.
    pub fn admit(&mut self, body: &[u8], at: u64, now_ms: u64) -> Result<(), (u16, &'static str)> {
        // Whatever is outside the window is refused by the `at` check anyway.
        let oldest_useful = now_ms.saturating_sub(AT_WINDOW_MS);
        self.seen.retain(|(_, seen_at)| *seen_at >= oldest_useful);
        let digest: [u8; 32] = Sha256::digest(body).into();
        if self.seen.iter().any(|(d, _)| *d == digest) {
            return Err((401, "this request was already used; sign a new one"));
        }
        if self.seen.len() >= USED_MAX {
            return Err((503, "too many admin requests in the last 30 s; try again"));
        }
        self.seen.push_back((digest, at));
        Ok(())
    }
}

/// Whether `at` (the sender's clock, ms since the epoch) is close enough to
/// `now_ms`; the error is the 401's reason.
pub(crate) fn check_at(at: u64, now_ms: u64) -> Result<(), ClockSkew> {
    let off = at.abs_diff(now_ms);
    if off > AT_WINDOW_MS {
        return Err(ClockSkew { off_ms: off });
    }
    Ok(())
}

/// A signed request's `at` too far from this node's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ClockSkew {
    pub off_ms: u64,
}

impl std::fmt::Display for ClockSkew {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "\"at\" is {} s away from this node's clock (at most 30 s): check the clocks, or sign a fresh request",
            self.off_ms / 1000
        )
    }
}

/// This machine's clock in ms since the epoch (0 before 1970: every `at` is
/// then refused, which is the safe side).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The checks every signed admin request passes after its tag and fields:
/// `at` close to this node's clock (401) and the body not used before (401,
/// or 503 when too many are remembered).
fn fresh_and_unused(node: &NodeHttp, body: &[u8], at: u64) -> Result<(), Reply> {
    let now = now_ms();
    check_at(at, now).map_err(|reason| http::error(401, &reason.to_string()))?;
    node.used_admin_requests
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .admit(body, at, now)
        .map_err(|(status, reason)| http::error(status, reason))
}

/// `POST /admin/forget`.
pub fn forget(node: &NodeHttp, request: &Request) -> Reply {
    let body = request.body();
    let tag = request.header(crate::auth::AUTH_HEADER);
    if let Err(reason) = node.handle.auth().verify_body(tag, body) {
        return http::error(401, reason);
    }
    let parsed: ForgetBody = match serde_json::from_slice(body) {
        Ok(parsed) => parsed,
        Err(e) => {
            let reason =
                format!("bad forget request: {e}; expected {{\"server\":\"ID\",\"at\":MS}}");
            return http::error(400, &reason);
        }
    };
    if parsed.server.is_empty() {
        return http::error(400, "bad forget request: \"server\" is empty");
    }
    if let Err(refused) = fresh_and_unused(node, body, parsed.at) {
        return refused;
    }
    match node
        .handle
        .forget(&parsed.server, Instant::now() + FORGET_WAIT)
    {
        ForgetOutcome::Forgotten => {
            log::info!("server {} forgotten on request", parsed.server);
            http::text(200, format!("forgot server {}", parsed.server))
        }
        ForgetOutcome::UnknownServer => http::error(
            404,
            &format!("no server {:?} in the table", truncate(&parsed.server)),
        ),
        ForgetOutcome::Unavailable(reason) => http::error(503, &reason),
    }
}

/// How long a membership change may take: a new node's catch-up included.
/// `raftlb member` waits 60 s by default.
pub(crate) const MEMBER_WAIT: Duration = Duration::from_secs(50);
/// The header a follower sets when it forwards a member request to the
/// leader, which then never forwards it again.
const FORWARDED_HEADER: &str = "x-raftlb-forwarded";

/// The body of `POST /admin/member`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberBody {
    op: String,
    id: String,
    addr: Option<String>,
    old: Option<String>,
    at: u64,
}

impl MemberBody {
    /// The operation it asks for, its names and address checked as nodes.txt
    /// checks its lines (the address must resolve here); the error is the
    /// 400's reason.
    fn op(&self) -> Result<MemberOp, String> {
        let check = |id: &str, addr: &str| crate::nodes::entry(id, addr).map(|_| ());
        let name_ok = |id: &str| check(id, "127.0.0.1:1");
        match (self.op.as_str(), &self.addr, &self.old) {
            ("add", Some(addr), None) => {
                check(&self.id, addr)?;
                Ok(MemberOp::Add {
                    name: self.id.clone(),
                    addr: addr.clone(),
                })
            }
            ("remove", None, None) => {
                name_ok(&self.id)?;
                Ok(MemberOp::Remove {
                    name: self.id.clone(),
                })
            }
            ("replace", Some(addr), Some(old)) => {
                check(&self.id, addr)?;
                name_ok(old)?;
                if *old == self.id {
                    return Err("\"old\" and \"id\" name the same node; replace needs a new name (or remove, then add)".into());
                }
                Ok(MemberOp::Replace {
                    old: old.clone(),
                    name: self.id.clone(),
                    addr: addr.clone(),
                })
            }
            ("add" | "remove" | "replace", _, _) => Err(format!(
                "op {:?} takes {}",
                self.op,
                match self.op.as_str() {
                    "add" => "\"id\" and \"addr\"",
                    "remove" => "\"id\" only",
                    _ => "\"id\", \"addr\" and \"old\"",
                }
            )),
            _ => Err(format!(
                "unknown op {:?}: expected add, remove or replace",
                truncate(&self.op)
            )),
        }
    }
}

/// `POST /admin/member`: the checks of `forget` (tag, JSON, `at`, single
/// use), then the change, carried out by the leader's event loop; a follower
/// forwards the request, as signed, to the leader it knows (once).
pub fn member(node: &NodeHttp, request: &Request) -> Reply {
    let body = request.body();
    let tag = request.header(crate::auth::AUTH_HEADER);
    if let Err(reason) = node.handle.auth().verify_body(tag, body) {
        return http::error(401, reason);
    }
    let parsed: MemberBody = match serde_json::from_slice(body) {
        Ok(parsed) => parsed,
        Err(e) => {
            let reason = format!(
                "bad member request: {e}; expected {{\"op\":\"add|remove|replace\",\"id\":\"F\",\"addr\":\"HOST:PORT\",\"old\":\"E\",\"at\":MS}}"
            );
            return http::error(400, &reason);
        }
    };
    let op = match parsed.op() {
        Ok(op) => op,
        Err(reason) => return http::error(400, &format!("bad member request: {reason}")),
    };
    if let Err(refused) = fresh_and_unused(node, body, parsed.at) {
        return refused;
    }
    match node.handle.change_members(op, Instant::now() + MEMBER_WAIT) {
        MemberOutcome::Done(configuration) => {
            http::text(200, format!("configuration: {configuration}\n"))
        }
        MemberOutcome::Busy(reason) => http::error(409, &reason),
        MemberOutcome::Invalid(reason) => http::error(400, &reason),
        MemberOutcome::Unavailable(reason) => http::error(503, &reason),
        MemberOutcome::NotLeader(None) => {
            http::error(503, "no leader known; try again once one is elected")
        }
        MemberOutcome::NotLeader(Some(_)) if request.header(FORWARDED_HEADER).is_some() => {
            http::error(503, "this node no longer leads; try again")
        }
        MemberOutcome::NotLeader(Some((name, addr))) => {
            forward(&name, &addr, body, tag.unwrap_or_default())
        }
    }
}

/// Sends a member request on to the leader and relays its answer.
fn forward(name: &str, addr: &str, body: &[u8], tag: &str) -> Reply {
    use crate::client::http as client;
    let timeouts = client::Timeouts {
        connect: Duration::from_secs(2),
        total: MEMBER_WAIT + Duration::from_secs(5),
    };
    let agent = client::agent(timeouts, false);
    let url = format!("http://{addr}/admin/member");
    match client::post_signed_json_with(&agent, &url, body, tag, &[(FORWARDED_HEADER, "1")]) {
        Ok(reply) => {
            let text = reply.body.trim_end().to_string();
            match reply.status {
                200 => http::text(200, format!("{text}\n")),
                status @ 400..=599 => http::error(status, &text),
                status => http::error(502, &format!("leader {name} answered {status}: {text}")),
            }
        }
        Err(e) => http::error(
            503,
            &format!("cannot reach the leader {name} at {addr}: {e}; the change may or may not have started"),
        ),
    }
}

/// A server id as a client sent it, cut for a one-line answer.
fn truncate(id: &str) -> String {
    id.chars().take(64).collect()
}

/// The lock that guards a node's [`UsedRequests`].
pub(crate) type UsedLock = Mutex<UsedRequests>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_used_once_within_the_window() {
        let mut used = UsedRequests::default();
        let now = 1_000_000_000;
        assert_eq!(used.admit(b"a", now, now), Ok(()));
        assert_eq!(used.admit(b"b", now, now), Ok(()));
        assert_eq!(used.admit(b"a", now, now + 1).map_err(|e| e.0), Err(401));
        // Once its `at` left the window it is forgotten (and check_at refuses it).
        assert_eq!(used.admit(b"a", now, now + AT_WINDOW_MS + 1), Ok(()));
        assert!(check_at(now, now + AT_WINDOW_MS + 1).is_err());
    }

    #[test]
    fn remembered_bodies_are_bounded() {
        let mut used = UsedRequests::default();
        let now = 1_000_000_000;
        for i in 0..USED_MAX {
            assert_eq!(used.admit(&i.to_le_bytes(), now, now), Ok(()));
        }
        let full = used.admit(b"one more", now, now);
        assert_eq!(full.map_err(|e| e.0), Err(503));
        assert_eq!(used.seen.len(), USED_MAX);
        // A window later, room again.
        assert_eq!(
            used.admit(b"one more", now + AT_WINDOW_MS + 1, now + AT_WINDOW_MS + 1),
            Ok(())
        );
        assert_eq!(used.seen.len(), 1);
    }

    #[test]
    fn at_is_checked_both_ways_without_overflow() {
        let now = 1_700_000_000_000;
        assert!(check_at(now, now).is_ok());
        assert!(check_at(now - AT_WINDOW_MS, now).is_ok());
        assert!(check_at(now + AT_WINDOW_MS, now).is_ok());
        assert!(check_at(now - AT_WINDOW_MS - 1, now).is_err());
        assert!(check_at(now + AT_WINDOW_MS + 1, now).is_err());
        assert!(check_at(0, now).is_err());
        assert!(check_at(u64::MAX, now).is_err());
        assert!(check_at(u64::MAX, 0).is_err());
    }
}
