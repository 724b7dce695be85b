//! `raftlb prime N`: asks the nodes in nodes.txt order for the N-th prime.
//!
//! N is checked here only for its shape (decimal digits, not zero, fits in 64
//! bits), so that garbage is refused without a network call. The upper bound is
//! each node's `--max-n`, which the client cannot know: a node's 400 for a too
//! large N is final and is reported as bad usage (exit 2) with the node's reason.

use std::time::{Duration, Instant};

use super::failover::{self, FailoverError};
use super::http::{self, Timeouts};
use crate::nodes::NodeEntry;

/// A prime and who gave it, for `raftlb prime -v`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The prime's digits.
    pub digits: String,
    /// The node that answered.
    pub node: NodeEntry,
    /// The server that computed it, as the node's `X-Raftlb-Server` names it.
    pub server: Option<String>,
    /// From the first request to the answer, failed nodes included.
    pub elapsed: Duration,
}

impl Answer {
    /// The `-v` line: "node A (localhost:34572) answered in 12 ms; server-2
    /// computed it".
    pub fn describe(&self) -> String {
        let server = self
            .server
            .as_deref()
            .unwrap_or("(the node did not say which server)");
        format!(
            "node {} ({}) answered in {} ms; server {server} computed it",
            self.node.id,
            self.node.addr,
            self.elapsed.as_millis()
        )
    }
}

/// Checks that `n` is a decimal N >= 1; the error is a one-line reason.
pub fn check_n(n: &str) -> Result<u64, crate::primes::BadN> {
    // The nodes' own parser, with no upper bound of its own: the shape rules
    // stay in one place.
    crate::primes::parse_n(n, u64::MAX).map_err(|bad| {
        // The client cannot know the nodes' bound: it names it.
        bad.with_upper(&format!(
            "the nodes' --max-n ({} by default)",
            crate::primes::MAX_N
        ))
    })
}

/// The N-th prime as the first node that can answer gives it (digits only).
pub fn prime(nodes: &[NodeEntry], n: u64, timeouts: Timeouts) -> Result<Answer, FailoverError> {
    let agent = http::agent(timeouts, false);
    let started = Instant::now();
    let (node, reply) = failover::first_answer(nodes, |node| {
        let url = format!("{}/prime/{n}", http::node_base_url(node));
        let reply = http::get(&agent, &url).map_err(|e| e.to_string())?;
        let digits = reply.body.trim();
        let is_number = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
        if reply.status == 200 && !is_number {
            return Err(format!(
                "answered 200 without a number: {}",
                failover::first_line(&reply.body)
            ));
        }
        Ok(reply)
    })?;
    Ok(Answer {
        digits: reply.body.trim().to_string(),
        node: node.clone(),
        server: reply.server,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_must_be_a_positive_decimal() {
        assert_eq!(check_n("1"), Ok(1));
        assert_eq!(check_n("10000000000"), Ok(10_000_000_000));
        assert_eq!(check_n("007"), Ok(7));
        for bad in [
            "",
            "0",
            "000",
            "-1",
            "+1",
            "abc",
            "1e3",
            "12x",
            " 1",
            "1.0",
            "123456789012345678901",
        ] {
            let err = check_n(bad).expect_err(bad).to_string();
            assert!(
                err.starts_with("N must be a whole number from 1 to "),
                "{err}"
            );
        }
    }
}
