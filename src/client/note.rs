//! `raftlb note get` and `raftlb note set TEXT`: the replicated note, with the
//! same failover as `prime` (nodes.txt order; the next node on a connection
//! error, a timeout or a 5xx; a 4xx is final).
//!
//! A node answers a note request within its own 3 s deadline (an election or
//! two), so the client's default timeout is a little longer. A 503 on a write
//! means the write may or may not have happened; setting the same text again on
//! the next node is harmless, which is why failing over is safe here.

use super::failover::{self, Failure};
use super::http::{self, Timeouts};
use crate::nodes::NodeEntry;
use crate::table::MAX_NOTE_BYTES;

/// Checks a note before any network call; the error is a one-line reason.
pub fn check_text(text: &str) -> Result<(), String> {
    if text.len() > MAX_NOTE_BYTES {
        return Err(format!(
            "the note is {} bytes; the limit is {MAX_NOTE_BYTES} (32 KiB)",
            text.len()
        ));
    }
    Ok(())
}

/// The note, read linearizably through the first node that can answer.
pub fn get(nodes: &[NodeEntry], timeouts: Timeouts) -> Result<String, Failure> {
    failover::first_body(nodes, timeouts, "/note")
}

/// Sets the note; returns the node that confirmed it and its answer (`saved at
/// index N`).
pub fn set(
    nodes: &[NodeEntry],
    text: &str,
    timeouts: Timeouts,
) -> Result<(String, String), Failure> {
    let agent = http::agent(timeouts, false);
    let (node, reply) = failover::first_answer(nodes, |node| {
        let url = format!("{}/note", http::node_base_url(node));
        http::put_text(&agent, &url, text.as_bytes())
    })?;
    Ok((node.id.clone(), reply.body.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_over_32_kib_is_refused_before_sending() {
        assert!(check_text("").is_ok());
        assert!(check_text(&"x".repeat(MAX_NOTE_BYTES)).is_ok());
        let err = check_text(&"é".repeat(MAX_NOTE_BYTES / 2 + 1)).expect_err("too large");
        assert!(err.contains("32768"), "{err}");
    }
}
