//! Trying the nodes until one answers: one after another (`first_answer`:
//! `prime`, `status --json`, `server forget`, `member list`), or all at once
//! with the first answer winning (`race`: `note get`, whose every node may
//! wait up to its 3 s deadline for a quorum, so that a user waits 3 s, not 3 s
//! per node). A write sent once (`note set`, `member add|remove|replace`) goes
//! to the leader first (`leader_first`).
//!
//! A node that cannot be reached, times out, or answers 5xx is skipped: another
//! node may well answer. A 4xx is final: it says the request itself is wrong
//! (a bad N, a note too large), and every node would say the same. 408 and 429
//! are the exceptions, as they say "not now" rather than "not this".

use std::fmt;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use super::http::{self, Reply, Timeouts};
use crate::nodes::NodeEntry;
use crate::status::Status;

/// Why one node gave no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFailure {
    pub node: String,
    pub addr: String,
    pub reason: String,
}

impl fmt::Display for NodeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {} ({}): {}", self.node, self.addr, self.reason)
    }
}

/// Why no node gave an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailoverError {
    /// A node answered 4xx; the others were not asked.
    Refused {
        node: String,
        status: u16,
        /// The first line of the node's answer.
        reason: String,
    },
    /// Every node failed, each for the reason given, in nodes.txt order.
    AllFailed(Vec<NodeFailure>),
}

impl fmt::Display for FailoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailoverError::Refused {
                node,
                status,
                reason,
            } => write!(f, "node {node} refused the request ({status}): {reason}"),
            FailoverError::AllFailed(failures) => write!(f, "all {} nodes failed", failures.len()),
        }
    }
}

/// Calls `call` on each node in order and returns the first 2xx reply with the
/// node that gave it. `call` may turn a reply it cannot use (a 200 whose body is
/// not a number) into an `Err`, which counts as that node failing.
pub(crate) fn first_answer(
    nodes: &[NodeEntry],
    mut call: impl FnMut(&NodeEntry) -> Result<Reply, String>,
) -> Result<(&NodeEntry, Reply), FailoverError> {
    let mut failures = Vec::with_capacity(nodes.len());
    for node in nodes {
        let reason = match call(node) {
            Ok(reply) if (200..300).contains(&reply.status) => return Ok((node, reply)),
            Ok(reply) if is_final(reply.status) => {
                return Err(FailoverError::Refused {
                    node: node.id.clone(),
                    status: reply.status,
                    reason: first_line(&reply.body),
                })
            }
            Ok(reply) => format!("answered {}: {}", reply.status, first_line(&reply.body)),
            Err(reason) => reason,
        };
        log::debug!("node {} failed: {reason}", node.id);
        failures.push(NodeFailure {
            node: node.id.clone(),
            addr: node.addr.clone(),
            reason,
        });
    }
    Err(FailoverError::AllFailed(failures))
}

/// Calls `call` on every node at once, each on a thread of its own, and
/// returns the first 2xx reply with its node, or the first final 4xx. Nodes
/// still working when an answer arrived are left to finish on their own (their
/// agent's timeouts bound them); so only requests that may be sent to several
/// nodes belong here: reads, not writes.
pub(crate) fn race(
    nodes: &[NodeEntry],
    call: impl Fn(&NodeEntry) -> Result<Reply, String> + Send + Sync + 'static,
) -> Result<(NodeEntry, Reply), FailoverError> {
    let call = Arc::new(call);
    let (done, answers) = mpsc::channel();
    for (index, node) in nodes.iter().enumerate() {
        let (call, done, node) = (Arc::clone(&call), done.clone(), node.clone());
        std::thread::spawn(move || {
            let result = call(&node);
            // The receiver is gone once an answer won: nothing to tell.
            let _ = done.send((index, result));
        });
    }
    drop(done);
    let mut failures: Vec<Option<NodeFailure>> = vec![None; nodes.len()];
    for (index, result) in answers {
        let node = &nodes[index];
        let reason = match result {
            Ok(reply) if (200..300).contains(&reply.status) => return Ok((node.clone(), reply)),
            Ok(reply) if is_final(reply.status) => {
                return Err(FailoverError::Refused {
                    node: node.id.clone(),
                    status: reply.status,
                    reason: first_line(&reply.body),
                })
            }
            Ok(reply) => format!("answered {}: {}", reply.status, first_line(&reply.body)),
            Err(reason) => reason,
        };
        log::debug!("node {} failed: {reason}", node.id);
        failures[index] = Some(NodeFailure {
            node: node.id.clone(),
            addr: node.addr.clone(),
            reason,
        });
    }
    Err(FailoverError::AllFailed(
        failures.into_iter().flatten().collect(),
    ))
}

/// The body of `GET path` from the first node that answers it with 2xx.
pub(crate) fn first_body(
    nodes: &[NodeEntry],
    timeouts: Timeouts,
    path: &str,
) -> Result<String, FailoverError> {
    let agent = http::agent(timeouts, false);
    let (_, reply) = first_answer(nodes, |node| {
        http::get(&agent, &format!("{}{path}", http::node_base_url(node)))
            .map_err(|e| e.to_string())
    })?;
    Ok(reply.body)
}

/// How long a write waits for the nodes' `/status` to learn the leader: the
/// nodes answer it from memory, so a node slower than this is down or paused.
const LEADER_LOOKUP_TIMEOUT: Duration = Duration::from_millis(1_000);

/// The order in which to offer a write that must be sent once (`note set`,
/// `member add`): every node's `/status` is asked at once (for at most
/// `LEADER_LOOKUP_TIMEOUT`), then the leader a node named comes first, the
/// nodes that answered next, the others last. The caller moves down the list
/// only while a node cannot be reached.
pub(crate) fn leader_first(nodes: &[NodeEntry], timeouts: Timeouts) -> Vec<&NodeEntry> {
    let lookup = Timeouts {
        connect: timeouts.connect.min(LEADER_LOOKUP_TIMEOUT),
        total: timeouts.total.min(LEADER_LOOKUP_TIMEOUT),
    };
    write_order(nodes, &ask_leader(nodes, lookup))
}

/// What the nodes' `/status`, asked at once, said about the leader.
#[derive(Debug, Default, PartialEq, Eq)]
struct LeaderLookup {
    /// The leader some node named (the first to name one).
    leader: Option<String>,
    /// The nodes that answered, in the order they did.
    answered: Vec<String>,
}

/// Asks every node's `/status` at once; stops at the first answer that names
/// a leader, or when every node answered or failed.
fn ask_leader(nodes: &[NodeEntry], timeouts: Timeouts) -> LeaderLookup {
    let agent = http::agent(timeouts, false);
    let (done, answers) = mpsc::channel();
    for node in nodes {
        let (agent, done, node) = (agent.clone(), done.clone(), node.clone());
        std::thread::spawn(move || {
            let url = format!("{}/status", http::node_base_url(&node));
            let status = http::get(&agent, &url)
                .ok()
                .filter(|reply| reply.status == 200)
                .and_then(|reply| serde_json::from_str::<Status>(&reply.body).ok());
            // Gone once a leader was found: nothing to tell.
            let _ = done.send((node.id, status));
        });
    }
    drop(done);
    let mut lookup = LeaderLookup::default();
    for (id, status) in answers {
        let Some(status) = status else { continue };
        lookup.answered.push(id);
        if status.leader.is_some() {
            lookup.leader = status.leader;
            break;
        }
    }
    lookup
}

/// The nodes to send a write to, one at a time: the leader, then the nodes
/// that answered, then the others (which may just be slow), each once.
fn write_order<'a>(nodes: &'a [NodeEntry], lookup: &LeaderLookup) -> Vec<&'a NodeEntry> {
    let by_id = |id: &String| nodes.iter().find(|n| &n.id == id);
    let mut order: Vec<&NodeEntry> = Vec::with_capacity(nodes.len());
    let known = lookup
        .leader
        .iter()
        .chain(&lookup.answered)
        .filter_map(by_id);
    for node in known.chain(nodes) {
        if !order.iter().any(|n| n.id == node.id) {
            order.push(node);
        }
    }
    order
}

/// A 4xx other than 408 (timeout) and 429 (too many requests).
fn is_final(status: u16) -> bool {
    (400..500).contains(&status) && status != 408 && status != 429
}

/// The first line of a body, cut to a length that fits a terminal line.
pub(crate) fn first_line(body: &str) -> String {
    let line = body.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return "(empty answer)".to_string();
    }
    line.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes() -> Vec<NodeEntry> {
        ["A", "B", "C"]
            .iter()
            .enumerate()
            .map(|(i, id)| NodeEntry {
                id: id.to_string(),
                addr: format!("h:{}", i + 1),
                socket: format!("127.0.0.1:{}", i + 1).parse().expect("literal"),
            })
            .collect()
    }

    fn reply(status: u16, body: &str) -> Result<Reply, String> {
        Ok(Reply {
            status,
            body: body.to_string(),
            server: None,
        })
    }

    #[test]
    fn the_first_2xx_wins_after_errors_and_5xx() {
        let nodes = nodes();
        let mut asked = Vec::new();
        let result = first_answer(&nodes, |n| {
            asked.push(n.id.clone());
            match n.id.as_str() {
                "A" => Err("connection refused".to_string()),
                "B" => reply(503, "no live server\n"),
                _ => reply(200, "104729"),
            }
        });
        let (node, answer) = result.expect("C answers");
        assert_eq!((node.id.as_str(), answer.body.as_str()), ("C", "104729"));
        assert_eq!(asked, ["A", "B", "C"]);
    }

    #[test]
    fn a_4xx_is_final_but_408_and_429_are_not() {
        let nodes = nodes();
        let mut asked = 0;
        let result = first_answer(&nodes, |_| {
            asked += 1;
            reply(400, "bad N: \"abc\" is not a number\nsecond line")
        });
        let want = FailoverError::Refused {
            node: "A".into(),
            status: 400,
            reason: "bad N: \"abc\" is not a number".into(),
        };
        assert_eq!(result.map(|(_, r)| r), Err(want));
        assert_eq!(asked, 1, "no other node asked");
        let busy = first_answer(&nodes, |n| match n.id.as_str() {
            "A" => reply(429, ""),
            "B" => reply(408, ""),
            _ => reply(200, "2"),
        });
        assert_eq!(busy.expect("C answers").0.id, "C");
    }

    #[test]
    fn a_race_takes_the_fastest_2xx_and_lists_every_failure_in_order() {
        let nodes = nodes();
        let slow = std::time::Duration::from_millis(300);
        let started = std::time::Instant::now();
        let (node, answer) = race(&nodes, move |n| {
            std::thread::sleep(slow);
            match n.id.as_str() {
                "A" => Err("connection refused".to_string()),
                _ => reply(200, &n.id),
            }
        })
        .expect("B or C answers");
        assert_eq!(node.id, answer.body);
        assert!(started.elapsed() < slow * 2, "asked at once, not in turn");
        let result = race(&nodes, |n| match n.id.as_str() {
            "A" => {
                std::thread::sleep(std::time::Duration::from_millis(100));
                reply(503, "no quorum")
            }
            _ => Err(format!("{} is down", n.id)),
        });
        let Err(FailoverError::AllFailed(failures)) = result else {
            panic!("every node failed: {result:?}");
        };
        let ids: Vec<&str> = failures.iter().map(|f| f.node.as_str()).collect();
        assert_eq!(ids, ["A", "B", "C"]);
        let refused = race(&nodes, |_| reply(413, "too large"));
        assert!(matches!(
            refused,
            Err(FailoverError::Refused { status: 413, .. })
        ));
    }

    #[test]
    fn a_write_goes_to_the_leader_then_to_the_nodes_that_answered() {
        let nodes: Vec<NodeEntry> = ["A", "B", "C", "D"]
            .iter()
            .enumerate()
            .map(|(i, id)| NodeEntry {
                id: id.to_string(),
                addr: format!("h:{}", i + 1),
                socket: format!("127.0.0.1:{}", i + 1).parse().expect("literal"),
            })
            .collect();
        let ids = |lookup: &LeaderLookup| -> Vec<String> {
            write_order(&nodes, lookup)
                .iter()
                .map(|n| n.id.clone())
                .collect()
        };
        let lookup = LeaderLookup {
            leader: Some("C".into()),
            answered: vec!["D".into(), "C".into()],
        };
        assert_eq!(ids(&lookup), ["C", "D", "A", "B"]);
        let lookup = LeaderLookup {
            leader: None,
            answered: vec!["B".into()],
        };
        assert_eq!(ids(&lookup), ["B", "A", "C", "D"]);
        let lookup = LeaderLookup {
            leader: Some("Z".into()),
            answered: vec![],
        };
        assert_eq!(ids(&lookup), ["A", "B", "C", "D"]);
    }

    #[test]
    fn all_failing_lists_every_node_in_order() {
        let nodes = nodes();
        let result = first_answer(&nodes, |n| match n.id.as_str() {
            "A" => Err("timed out".to_string()),
            "B" => reply(502, ""),
            _ => reply(302, "elsewhere"),
        });
        let Err(FailoverError::AllFailed(failures)) = result else {
            panic!("every node failed: {result:?}");
        };
        let lines: Vec<String> = failures.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "node A (h:1): timed out",
                "node B (h:2): answered 502: (empty answer)",
                "node C (h:3): answered 302: elsewhere",
            ]
        );
    }
}
