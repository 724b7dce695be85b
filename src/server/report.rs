//! `POST /report`: a daemon's load report becomes a proposal.
//!
//! The body comes within its limit (the server answers 413 above 4 KiB), its
//! `X-Raftlb-Auth` tag is checked against the cluster key (401 with the reason;
//! counted with the other answers by code), it is parsed and validated (400 with
//! the reason), then handed to the event loop, which proposes it (leader)
//! or forwards it to the leader (follower). 202: accepted, not yet committed.

use super::counters::HttpCounters;
use super::NodeHttp;
use crate::http::{self, Reply, Request};
use crate::report::Report;
use crate::runtime::NotTaken;

pub fn handle(node: &NodeHttp, request: &Request) -> Reply {
    let body = request.body();
    let tag = request.header(crate::auth::AUTH_HEADER);
    if let Err(reason) = node.handle.auth().verify_body(tag, body) {
        return http::error(401, reason);
    }
    let report = match Report::parse(body) {
        Ok(report) => report,
        Err(reason) => return http::error(400, &reason.to_string()),
    };
    // One read guard for both questions: taking a second one while holding the
    // first can deadlock behind a waiting writer (the event loop applying).
    let table_full = {
        let table = node.handle.table();
        table.get(&report.server).is_none() && table.len() >= crate::table::MAX_SERVERS
    };
    if table_full {
        return http::error(
            503,
            &format!("load table full ({} servers)", crate::table::MAX_SERVERS),
        );
    }
    match node.handle.submit_report(report) {
        Ok(()) => {
            HttpCounters::add(&node.counters.reports_received);
            http::text(202, "accepted")
        }
        Err(NotTaken::QueueFull) => {
            http::error(503, "node busy: report queue full, send the next one")
        }
        Err(NotTaken::Stopping) => http::error(503, "this node is stopping"),
    }
}
