//! `raftlb prime N`: asks the nodes in nodes.txt order for the N-th prime.
//!
//! N is checked here only for its shape (decimal digits, not zero, fits in 64
//! bits), so that garbage is refused without a network call. The upper bound is
//! each node's `--max-n`, which the client cannot know: a node's 400 for a too
//! large N is final and is reported as bad usage (exit 2) with the node's reason.

use super::failover::{self, Failure};
use super::http::{self, Timeouts};
use crate::nodes::NodeEntry;

/// Checks that `n` is a decimal N >= 1; the error is a one-line reason.
pub fn check_n(n: &str) -> Result<u64, String> {
    // The nodes' own parser, with no upper bound of its own: the shape rules
    // stay in one place.
    crate::primes::parse_n(n, u64::MAX)
        .map_err(|_| format!("N must be a decimal integer of at least 1, found {n:?}"))
}

/// The N-th prime as the first node that can answer gives it (digits only).
pub fn prime(nodes: &[NodeEntry], n: u64, timeouts: Timeouts) -> Result<String, Failure> {
    let agent = http::agent(timeouts, false);
    let (_, reply) = failover::first_answer(nodes, |node| {
        let url = format!("{}/prime/{n}", http::node_base_url(node));
        let reply = http::get(&agent, &url)?;
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
    Ok(reply.body.trim().to_string())
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
            let err = check_n(bad).expect_err(bad);
            assert!(err.starts_with("N must be a decimal integer"), "{err}");
        }
    }
}
