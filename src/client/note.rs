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

use super::failover::{self, FailoverError, NodeFailure};
use super::http::{self, Timeouts};
use crate::nodes::NodeEntry;
use crate::table::MAX_NOTE_BYTES;

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
    let order = failover::leader_first(nodes, timeouts);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_over_32_kib_is_refused_before_sending() {
        assert!(check_text("").is_ok());
        assert!(check_text(&"x".repeat(MAX_NOTE_BYTES)).is_ok());
        let err = check_text(&"é".repeat(MAX_NOTE_BYTES / 2 + 1)).expect_err("too large");
        assert_eq!(err.bytes, MAX_NOTE_BYTES + 2);
        assert!(err.to_string().contains("32768"), "{err}");
    }
}
