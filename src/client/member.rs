//! `raftlb member list|add|remove|replace`: the cluster's configuration as a
//! node's `/status` shows it, and signed membership changes
//! (`POST /admin/member`).
//!
//! A change is not idempotent (an `add` sent twice could commit twice, the
//! second over a later `remove`), so it is sent once: to the leader when a
//! node's `/status` names one, else to the first node that answered, and to
//! another node only when a node cannot be connected to at all. Any answer, a
//! timeout or a connection lost after sending is final. Arguments are checked
//! here first, with the rules nodes.txt applies, so a typo never reaches the
//! cluster.
//!
//! The configuration learned from `/status` also widens the client's and the
//! daemon's node lists ([`merge_members`]): nodes.txt first, in its order,
//! then the members it lacks.

use std::fmt;

use serde::Deserialize;

use super::failover::{self, FailoverError, NodeFailure};
use super::http::{self, CallError, Timeouts};
use crate::auth::Keys;
use crate::nodes::{NodeEntry, MAX_ID_BYTES, MAX_NODES};

/// Longest `HOST:PORT` accepted: a DNS name (253) and a port.
const MAX_ADDR_BYTES: usize = 253 + 6;

/// A member argument refused before any network call; `Display` is the
/// one-line usage message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadArgument {
    /// A node id that nodes.txt would refuse.
    Id { id: String },
    /// An address that is not `HOST:PORT` with a port from 1 to 65535.
    Addr { addr: String, reason: &'static str },
    /// `replace OLD NEW` with the same id twice.
    SameId { id: String },
}

impl fmt::Display for BadArgument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadArgument::Id { id } => write!(
                f,
                "bad node id {id:?}: use 1 to {MAX_ID_BYTES} letters, digits, '-' or '_'"
            ),
            BadArgument::Addr { addr, reason } => {
                write!(f, "bad address {addr:?}: {reason}")
            }
            BadArgument::SameId { id } => write!(
                f,
                "replace OLD NEW: both are {id:?}; the new node needs an id of its own"
            ),
        }
    }
}

impl std::error::Error for BadArgument {}

/// Checks a node id with nodes.txt's rule (`nodes::parse_line`): 1 to 32
/// ASCII letters, digits, `-` or `_`.
pub fn check_id(id: &str) -> Result<(), BadArgument> {
    if !crate::nodes::valid_id(id) {
        return Err(BadArgument::Id { id: id.to_string() });
    }
    Ok(())
}

/// Checks `HOST:PORT` without resolving it (the new node's host may be known
/// to the cluster's hosts and not to this one): a non-empty host with no
/// blank, control character or `#` (nodes.txt's comment), and a port from 1
/// to 65535.
pub fn check_addr(addr: &str) -> Result<(), BadArgument> {
    let bad = |reason| {
        Err(BadArgument::Addr {
            addr: addr.to_string(),
            reason,
        })
    };
    let Some((host, port)) = addr.rsplit_once(':') else {
        return bad("expected HOST:PORT");
    };
    if host.is_empty() {
        return bad("empty host");
    }
    if addr.len() > MAX_ADDR_BYTES {
        return bad("too long");
    }
    if addr
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '#')
    {
        return bad("blanks, control characters and # are not allowed");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => bad("port must be 1-65535"),
    }
}

/// One membership change, its arguments checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add node `id` at `addr` (it catches up as a learner, then votes).
    Add { id: String, addr: String },
    /// Remove node `id`.
    Remove { id: String },
    /// Add node `id` at `addr` in place of `old`.
    Replace {
        old: String,
        id: String,
        addr: String,
    },
}

impl Change {
    /// `member add ID HOST:PORT`.
    pub fn add(id: &str, addr: &str) -> Result<Change, BadArgument> {
        check_id(id)?;
        check_addr(addr)?;
        Ok(Change::Add {
            id: id.to_string(),
            addr: addr.to_string(),
        })
    }

    /// `member remove ID`.
    pub fn remove(id: &str) -> Result<Change, BadArgument> {
        check_id(id)?;
        Ok(Change::Remove { id: id.to_string() })
    }

    /// `member replace OLD NEW HOST:PORT`.
    pub fn replace(old: &str, new: &str, addr: &str) -> Result<Change, BadArgument> {
        check_id(old)?;
        check_id(new)?;
        check_addr(addr)?;
        if old == new {
            return Err(BadArgument::SameId {
                id: old.to_string(),
            });
        }
        Ok(Change::Replace {
            old: old.to_string(),
            id: new.to_string(),
            addr: addr.to_string(),
        })
    }

    /// The body of `POST /admin/member` at `at_ms` (ms since the epoch), as
    /// SPEC gives it: `op`, `id`, `addr` for add and replace, `old` for
    /// replace, `at`.
    pub fn body(&self, at_ms: u64) -> Vec<u8> {
        let value = match self {
            Change::Add { id, addr } => {
                serde_json::json!({ "op": "add", "id": id, "addr": addr, "at": at_ms })
            }
            Change::Remove { id } => serde_json::json!({ "op": "remove", "id": id, "at": at_ms }),
            Change::Replace { old, id, addr } => serde_json::json!({
                "op": "replace", "id": id, "addr": addr, "old": old, "at": at_ms
            }),
        };
        serde_json::to_vec(&value).expect("strings and a number serialize")
    }
}

/// One member of the configuration, as `/status` lists it in `nodes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub addr: String,
    /// False for a learner (a new node catching up, not yet voting).
    pub voter: bool,
}

/// The configuration as one node's `/status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Configuration {
    /// The node whose `/status` this is.
    pub seen_by: String,
    /// The leader as that node knows it.
    pub leader: Option<String>,
    /// Its `nodes`, in its order, at most `nodes::MAX_NODES`.
    pub members: Vec<Member>,
}

/// The parts of `/status` read here; others are ignored, so this reads the
/// answers of nodes older and newer than the client.
#[derive(Deserialize)]
struct StatusMembers {
    id: String,
    leader: Option<String>,
    nodes: Vec<StatusNode>,
}

#[derive(Deserialize)]
struct StatusNode {
    id: String,
    addr: String,
    /// Missing (a node from before membership changes) means a voter.
    #[serde(default)]
    voter: Option<bool>,
}

/// The configuration in a `/status` body; more than `nodes::MAX_NODES`
/// members are cut.
pub fn parse_configuration(body: &str) -> Result<Configuration, serde_json::Error> {
    let status: StatusMembers = serde_json::from_str(body)?;
    Ok(Configuration {
        seen_by: status.id,
        leader: status.leader,
        members: (status.nodes.into_iter().take(MAX_NODES))
            .map(|n| Member {
                id: n.id,
                addr: n.addr,
                voter: n.voter.unwrap_or(true),
            })
            .collect(),
    })
}

/// The configuration from the first node (in order) whose `/status` answers
/// with one.
pub fn list(nodes: &[NodeEntry], timeouts: Timeouts) -> Result<Configuration, FailoverError> {
    let agent = http::agent(timeouts, false);
    let mut found = None;
    failover::first_answer(nodes, |node| {
        let url = format!("{}/status", http::node_base_url(node));
        let reply = http::get(&agent, &url).map_err(|e| e.to_string())?;
        if (200..300).contains(&reply.status) {
            let config =
                parse_configuration(&reply.body).map_err(|e| format!("bad /status JSON: {e}"))?;
            found = Some(config);
        }
        Ok(reply)
    })?;
    Ok(found.expect("first_answer returns Ok only for a 2xx, which set it"))
}

/// `member list`'s output: one row per member (`*` marks the leader), then
/// whose view it is.
pub fn render(config: &Configuration) -> String {
    let mut rows = vec![super::view::row(&["", "ID", "ADDRESS", "MEMBER"])];
    for m in &config.members {
        let leads = config.leader.as_deref() == Some(m.id.as_str());
        let mark = if leads { "*" } else { "" };
        let kind = if m.voter { "voter" } else { "learner" };
        rows.push(super::view::row(&[mark, &m.id, &m.addr, kind]));
    }
    let voters = config.members.iter().filter(|m| m.voter).count();
    let learners = config.members.len() - voters;
    let leader = match &config.leader {
        Some(id) => format!("leader {id}"),
        None => "no leader known".to_string(),
    };
    format!(
        "{}\n{leader} (as node {} sees it); voters: {voters}, learners: {learners}\n",
        super::view::aligned(&rows),
        config.seen_by
    )
}

/// Why a change was not confirmed; `Display` is one line for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeError {
    /// 409: another change has not committed yet. Nothing was changed.
    Pending { node: String, reason: String },
    /// Another 4xx (bad tag, bad fields, ...). Nothing was changed.
    Refused {
        node: String,
        status: u16,
        reason: String,
    },
    /// The request reached `node` but no verdict came back (5xx, a timeout,
    /// a connection lost): it may have committed.
    Unsure { node: String, reason: String },
    /// No node could be connected to: the request was never sent.
    Unreachable(Vec<NodeFailure>),
}

impl fmt::Display for ChangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChangeError::Pending { node, reason } => write!(
                f,
                "another membership change is pending: {reason} (node {node}); \
                 try again once it has committed"
            ),
            ChangeError::Refused {
                node,
                status,
                reason,
            } => write!(f, "node {node} refused the change ({status}): {reason}"),
            ChangeError::Unsure { node, reason } => write!(
                f,
                "node {node}: {reason}; the change may or may not have happened: \
                 check `raftlb member list`"
            ),
            ChangeError::Unreachable(failures) => write!(
                f,
                "none of the {} nodes could be reached; nothing was sent",
                failures.len()
            ),
        }
    }
}

impl std::error::Error for ChangeError {}

/// Sends `change` once, signed with `keys` at the moment it is sent, to the
/// leader first (see `failover::leader_first`); returns the node that
/// confirmed it and its answer (the new configuration).
pub fn change(
    nodes: &[NodeEntry],
    keys: &Keys,
    change: &Change,
    timeouts: Timeouts,
) -> Result<(String, String), ChangeError> {
    let agent = http::agent(timeouts, false);
    let mut failures = Vec::new();
    for node in failover::leader_first(nodes, timeouts) {
        let body = change.body(crate::server::admin::now_ms());
        let (_, tag) = super::auth::sign(keys, &body);
        let url = format!("{}/admin/member", http::node_base_url(node));
        let reply = match http::post_signed_json(&agent, &url, &body, Some(&tag)) {
            Ok(reply) => reply,
            Err(CallError::NotConnected(reason)) => {
                log::debug!("node {} cannot be reached: {reason}", node.id);
                failures.push(NodeFailure {
                    node: node.id.clone(),
                    addr: node.addr.clone(),
                    reason,
                });
                continue;
            }
            Err(e) => {
                return Err(ChangeError::Unsure {
                    node: node.id.clone(),
                    reason: e.to_string(),
                })
            }
        };
        return verdict(&node.id, reply.status, &reply.body);
    }
    Err(ChangeError::Unreachable(failures))
}

/// What a node's answer to a change means.
fn verdict(node: &str, status: u16, body: &str) -> Result<(String, String), ChangeError> {
    let node = node.to_string();
    let reason = failover::first_line(body);
    match status {
        200..=299 => Ok((node, body.trim_end().to_string())),
        409 => Err(ChangeError::Pending { node, reason }),
        400..=499 => Err(ChangeError::Refused {
            node,
            status,
            reason,
        }),
        _ => Err(ChangeError::Unsure {
            node,
            reason: format!("answered {status}: {reason}"),
        }),
    }
}

/// A node list widened by a configuration: the entries and the members left
/// out, each with why (for a debug log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merged {
    pub entries: Vec<NodeEntry>,
    pub skipped: Vec<String>,
}

/// `known` (nodes.txt) first, in its order and all of it, then each member
/// whose id and address `known` lacks, at most `nodes::MAX_NODES` in all. A
/// member whose address is not `HOST:PORT` or does not resolve is skipped.
/// Resolving may ask DNS: call it where a wait is harmless.
pub fn merge_members(known: &[NodeEntry], members: &[Member]) -> Merged {
    let mut merged = Merged {
        entries: known.to_vec(),
        skipped: Vec::new(),
    };
    for member in members {
        if merged.entries.iter().any(|e| e.id == member.id) {
            continue;
        }
        if merged.entries.len() >= MAX_NODES {
            merged
                .skipped
                .push(format!("member {}: more than {MAX_NODES} nodes", member.id));
            continue;
        }
        // The CLI's address check (no blanks, '#', length), then nodes.txt's
        // own (id rule, resolving).
        let entry = check_addr(&member.addr)
            .map_err(|e| e.to_string())
            .and_then(|()| crate::nodes::entry(&member.id, &member.addr));
        match entry {
            Ok(entry) if merged.entries.iter().all(|e| e.socket != entry.socket) => {
                merged.entries.push(entry)
            }
            Ok(entry) => merged.skipped.push(format!(
                "member {}: address {} is another node's",
                member.id, entry.socket
            )),
            Err(reason) => merged
                .skipped
                .push(format!("member {}: {reason}", member.id)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::Nodes;

    #[test]
    fn ids_follow_the_nodes_txt_rule() {
        let long = "x".repeat(MAX_ID_BYTES);
        let too_long = "x".repeat(MAX_ID_BYTES + 1);
        let ids = [
            "A", "node-7", "a_b", &long, "", &too_long, "a b", "a\tb", "A/B", "é", "a#b", "a.b",
        ];
        for id in ids {
            // Whatever nodes.txt accepts as an id, and only that.
            let in_file = !id.is_empty()
                && !id.contains('#')
                && Nodes::parse(&format!("{id} 127.0.0.1:1\n"), "n").is_ok();
            assert_eq!(check_id(id).is_ok(), in_file, "{id:?}");
        }
        let err = check_id("a b").expect_err("a blank").to_string();
        assert_eq!(
            err,
            "bad node id \"a b\": use 1 to 32 letters, digits, '-' or '_'"
        );
    }

    #[test]
    fn addresses_need_a_host_and_a_port_from_1_to_65535() {
        for good in [
            "localhost:34577",
            "10.0.0.6:1",
            "[::1]:65535",
            "h.example:80",
        ] {
            assert_eq!(check_addr(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("localhost", "expected HOST:PORT"),
            (":34577", "empty host"),
            ("h:0", "port must be 1-65535"),
            ("h:65536", "port must be 1-65535"),
            ("h:x", "port must be 1-65535"),
            ("h:", "port must be 1-65535"),
            ("a b:1", "blanks, control characters and # are not allowed"),
            ("h#x:1", "blanks, control characters and # are not allowed"),
        ] {
            let err = check_addr(bad).expect_err(bad);
            assert_eq!(
                err,
                BadArgument::Addr {
                    addr: bad.into(),
                    reason: why
                }
            );
        }
    }

    #[test]
    fn replace_needs_two_different_ids() {
        let err = Change::replace("C", "C", "h:1").expect_err("same id");
        assert!(err.to_string().contains("both are \"C\""), "{err}");
        assert!(Change::replace("C", "", "h:1").is_err());
        assert!(Change::replace("C", "F", "h").is_err());
        assert!(Change::add("F", "h:99999").is_err());
        assert!(Change::remove("bad id").is_err());
    }

    fn keys(body: &[u8]) -> Vec<(String, serde_json::Value)> {
        let value: serde_json::Value = serde_json::from_slice(body).expect("json");
        let object = value.as_object().expect("an object");
        object.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    #[test]
    fn each_op_sends_exactly_the_keys_spec_names() {
        let at = 1_700_000_000_123u64;
        let json = |pairs: &[(&str, serde_json::Value)]| -> Vec<(String, serde_json::Value)> {
            let mut pairs: Vec<_> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            pairs
        };
        let sorted = |body: Vec<u8>| {
            let mut pairs = keys(&body);
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            pairs
        };
        let add = Change::add("F", "localhost:34577").expect("valid");
        assert_eq!(
            sorted(add.body(at)),
            json(&[
                ("op", "add".into()),
                ("id", "F".into()),
                ("addr", "localhost:34577".into()),
                ("at", at.into()),
            ])
        );
        let remove = Change::remove("E").expect("valid");
        assert_eq!(
            sorted(remove.body(at)),
            json(&[
                ("op", "remove".into()),
                ("id", "E".into()),
                ("at", at.into())
            ])
        );
        let replace = Change::replace("E", "F", "10.0.0.6:34577").expect("valid");
        assert_eq!(
            sorted(replace.body(at)),
            json(&[
                ("op", "replace".into()),
                ("id", "F".into()),
                ("old", "E".into()),
                ("addr", "10.0.0.6:34577".into()),
                ("at", at.into()),
            ])
        );
    }

    #[test]
    fn answers_map_to_confirmed_pending_refused_or_unsure() {
        assert_eq!(
            verdict("C", 200, "A localhost:1 voter\nF localhost:6 learner\n"),
            Ok((
                "C".into(),
                "A localhost:1 voter\nF localhost:6 learner".into()
            ))
        );
        let pending = verdict("C", 409, "adding F has not committed\n").expect_err("409");
        assert!(
            pending
                .to_string()
                .starts_with("another membership change is pending: adding F has not committed"),
            "{pending}"
        );
        assert!(matches!(
            verdict("C", 401, "bad tag"),
            Err(ChangeError::Refused { status: 401, .. })
        ));
        let unsure = verdict("C", 503, "no leader").expect_err("503").to_string();
        assert!(
            unsure.contains("may or may not have happened") && unsure.contains("member list"),
            "{unsure}"
        );
    }

    fn status_body(nodes: &str) -> String {
        format!(
            r#"{{"id":"B","role":"follower","term":3,"leader":"A","commit_index":9,
                "applied_index":9,"nodes":[{nodes}],"servers":[],"extra":1}}"#
        )
    }

    #[test]
    fn a_status_gives_the_configuration_and_a_missing_voter_is_a_voter() {
        let body = status_body(
            r#"{"id":"A","addr":"127.0.0.1:1","voter":true},
               {"id":"B","addr":"127.0.0.1:2","reachable":true},
               {"id":"F","addr":"127.0.0.1:6","voter":false}"#,
        );
        let config = parse_configuration(&body).expect("valid");
        assert_eq!(config.seen_by, "B");
        assert_eq!(config.leader.as_deref(), Some("A"));
        let voters: Vec<(&str, bool)> = (config.members.iter())
            .map(|m| (m.id.as_str(), m.voter))
            .collect();
        assert_eq!(voters, [("A", true), ("B", true), ("F", false)]);
        let text = render(&config);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["ID", "ADDRESS", "MEMBER"]
        );
        assert!(lines[1].starts_with("*  A"), "{text}");
        let words = |line: &str| line.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(words(lines[3]), "F 127.0.0.1:6 learner", "{text}");
        assert!(
            text.ends_with("\nleader A (as node B sees it); voters: 2, learners: 1\n"),
            "{text}"
        );
        assert!(parse_configuration("{\"id\":\"B\"}").is_err());
        let many: Vec<String> = (0..100)
            .map(|i| format!(r#"{{"id":"n{i}","addr":"127.0.0.1:{}"}}"#, i + 1))
            .collect();
        let config = parse_configuration(&status_body(&many.join(","))).expect("valid");
        assert_eq!(config.members.len(), MAX_NODES);
    }

    fn member(id: &str, addr: &str) -> Member {
        Member {
            id: id.into(),
            addr: addr.into(),
            voter: true,
        }
    }

    #[test]
    fn merging_keeps_nodes_txt_first_and_adds_only_new_members() {
        let known = Nodes::parse("A 127.0.0.1:1\nB 127.0.0.1:2\nE 127.0.0.1:5\n", "n")
            .expect("valid")
            .entries()
            .to_vec();
        let members = [
            member("B", "127.0.0.1:2"),
            member("F", "127.0.0.1:6"),
            member("A", "127.0.0.1:1"),
            member("G", "no-port"),
            member("bad id", "127.0.0.1:7"),
            member("H", "127.0.0.1:2"),
        ];
        let merged = merge_members(&known, &members);
        let ids: Vec<&str> = merged.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["A", "B", "E", "F"], "E stays though not a member");
        assert_eq!(
            merged.entries[3].socket,
            "127.0.0.1:6".parse().expect("literal")
        );
        assert_eq!(merged.skipped.len(), 3, "{:?}", merged.skipped);
        assert!(merged.skipped[0].starts_with("member G: bad address"));
        assert!(merged.skipped[2].contains("another node's"));
        let many: Vec<Member> = (10..200)
            .map(|i| member(&format!("n{i}"), &format!("127.0.0.1:{i}")))
            .collect();
        let merged = merge_members(&known, &many);
        assert_eq!(merged.entries.len(), MAX_NODES);
        assert_eq!(merged.entries[0].id, "A");
    }
}
