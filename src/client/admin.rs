//! `raftlb server forget ID`: the signed admin command that removes a server
//! from the agreed table (`POST /admin/forget`).
//!
//! Each node asked gets a body of its own, `{"server":ID,"at":NOW}` signed
//! with the cluster key at the moment it is sent, so a retry on the next node
//! is never a replay. Failover as for the note: the next node on a
//! connection error, a timeout or a 5xx; a 4xx (bad tag, unknown server,
//! clocks too far apart) is final.

use super::failover::{self, FailoverError};
use super::http::{self, Timeouts};
use crate::auth::Keys;
use crate::nodes::NodeEntry;

/// The body of a forget request for `server` at `at_ms` (ms since the epoch).
pub fn forget_body(server: &str, at_ms: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "server": server, "at": at_ms }))
        .expect("a string and a number serialize")
}

/// Asks the nodes in order to forget `server`; returns the node that
/// confirmed it and its answer.
pub fn forget(
    nodes: &[NodeEntry],
    keys: &Keys,
    server: &str,
    timeouts: Timeouts,
) -> Result<(String, String), FailoverError> {
    let agent = http::agent(timeouts, false);
    let (node, reply) = failover::first_answer(nodes, |node| {
        let body = forget_body(server, crate::server::admin::now_ms());
        let (_, tag) = super::auth::sign(keys, &body);
        let url = format!("{}/admin/forget", http::node_base_url(node));
        http::post_signed_json(&agent, &url, &body, Some(&tag)).map_err(|e| e.to_string())
    })?;
    Ok((node.id.clone(), reply.body.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_the_json_spec_names() {
        let body = forget_body("worker-\"1\"", 1_700_000_000_123);
        let value: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(value["server"], "worker-\"1\"");
        assert_eq!(value["at"], 1_700_000_000_123u64);
        assert_eq!(value.as_object().map(|o| o.len()), Some(2));
    }
}
