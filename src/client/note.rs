//! `raftlb note get` and `raftlb note set TEXT`: the replicated note.
//!
//! A node answers a note request within its own 3 s deadline (an election or
//! two), so the client's default timeout is a little longer, and the client
//! never waits that deadline once per node:
//! - a read asks every node at once, and the first answer wins (a read is
//!   safe to send many times);
//! - a write is sent once, to the leader when the nodes' `/status` (asked at
//!   once) names one, else to the first node that answered. It moves to the
//!   next node only when a node cannot be reached: a node that answers 503
//!   speaks for the cluster (no quorum), and a copy of the write sent to a
//!   second node could commit later, over a newer write of another client.

use std::sync::mpsc;
use std::time::Duration;

use super::failover::{self, FailoverError, NodeFailure};
use super::http::{self, Timeouts};
use crate::nodes::NodeEntry;
use crate::status::Status;
use crate::table::MAX_NOTE_BYTES;

/// How long a write waits for the nodes' `/status` to learn the leader: the
/// nodes answer it from memory, so a node slower than this is down or paused.
const LEADER_LOOKUP_TIMEOUT: Duration = Duration::from_millis(1_000);

/// Checks a note before any network call.
pub fn check_text(text: &str) -> Result<(), NoteTooLarge> {
    if text.len() > MAX_NOTE_BYTES {
        return Err(NoteTooLarge { bytes: text.len() });
    }
    Ok(())
}

/// A note over the 32 KiB limit, of this many bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoteTooLarge {
    pub bytes: usize,
}

impl std::fmt::Display for NoteTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bytes = self.bytes;
        write!(
            f,
            "the note is {bytes} bytes; the limit is {MAX_NOTE_BYTES} (32 KiB)"
        )
    }
}

impl std::error::Error for NoteTooLarge {}

/// The note, read linearizably through the first node that can answer.
pub fn get(nodes: &[NodeEntry], timeouts: Timeouts) -> Result<String, FailoverError> {
    let agent = http::agent(timeouts, false);
    let (_, reply) = failover::race(nodes, move |node| {
        http::get(&agent, &format!("{}/note", http::node_base_url(node))).map_err(|e| e.to_string())
    })?;
    Ok(reply.body)
}

/// Sets the note; returns the node that confirmed it and its answer (`saved at
/// index N`).
pub fn set(
    nodes: &[NodeEntry],
    text: &str,
    timeouts: Timeouts,
) -> Result<(String, String), FailoverError> {
    let lookup = Timeouts {
        connect: timeouts.connect.min(LEADER_LOOKUP_TIMEOUT),
        total: timeouts.total.min(LEADER_LOOKUP_TIMEOUT),
    };
    let order = write_order(nodes, &ask_leader(nodes, lookup));
    let agent = http::agent(timeouts, false);
    let mut failures = Vec::new();
    for node in order {
        let url = format!("{}/note", http::node_base_url(node));
        match http::put_text(&agent, &url, text.as_bytes()) {
            Ok(reply) if (200..300).contains(&reply.status) => {
                return Ok((node.id.clone(), reply.body.trim().to_string()))
            }
            Ok(reply) => {
                return Err(FailoverError::Refused {
                    node: node.id.clone(),
                    status: reply.status,
                    reason: failover::first_line(&reply.body),
                })
            }
            Err(reason) => failures.push(NodeFailure {
                node: node.id.clone(),
                addr: node.addr.clone(),
                reason: reason.to_string(),
            }),
        }
    }
    Err(FailoverError::AllFailed(failures))
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_note_over_32_kib_is_refused_before_sending() {
        assert!(check_text("").is_ok());
        assert!(check_text(&"x".repeat(MAX_NOTE_BYTES)).is_ok());
        let err = check_text(&"é".repeat(MAX_NOTE_BYTES / 2 + 1)).expect_err("too large");
        assert_eq!(err.bytes, MAX_NOTE_BYTES + 2);
        assert!(err.to_string().contains("32768"), "{err}");
    }
}
