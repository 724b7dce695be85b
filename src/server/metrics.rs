//! `GET /metrics` in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::choice::Chooser;
use super::counters::{Forwards, HttpCounters, FORWARD_BUCKETS_SECONDS};
use crate::http::{self, Reply};
use crate::raft::Role;
use crate::runtime::NodeHandle;

pub fn reply(node: &NodeHandle, http_counters: &HttpCounters, chooser: &Chooser) -> Reply {
    http::text(200, render(node, http_counters, chooser))
}

/// The cost the policy's scores in `/metrics` are given for: a small prime's
/// worker time, in ms (most requests are cheap).
const SCORE_COST_MS: f64 = 1.0;

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// The whole exposition; families in a fixed order so a diff shows changes.
pub fn render(node: &NodeHandle, h: &HttpCounters, chooser: &Chooser) -> String {
    let view = node.view();
    let m = node.counters();
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, lines: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in lines {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let roles = [Role::Leader, Role::Follower, Role::Candidate];
    let role_of = |r: Role| match view.role {
        Role::PreCandidate => Role::Candidate,
        other => other,
    } == r;
    family(
        "raftlb_role",
        "gauge",
        "1 for this node's current Raft role.",
        roles
            .iter()
            .map(|r| (format!("{{role=\"{}\"}}", r.as_str()), role_of(*r) as u64))
            .collect(),
    );
    family(
        "raftlb_term",
        "gauge",
        "Current Raft term.",
        vec![(String::new(), view.term)],
    );
    family(
        "raftlb_commit_index",
        "gauge",
        "Highest log index known committed.",
        vec![(String::new(), view.commit_index)],
    );
    family(
        "raftlb_applied_index",
        "gauge",
        "Highest log index applied to the load table.",
        vec![(String::new(), view.applied_index)],
    );
    family(
        "raftlb_elections_total",
        "counter",
        "Elections this node started as a candidate.",
        vec![(String::new(), get(&m.elections))],
    );
    let dropped = [
        ("decode", get(&m.datagrams_dropped_decode)),
        ("unknown_source", get(&m.datagrams_dropped_unknown_source)),
        ("queue_full", get(&m.datagrams_dropped_queue_full)),
        ("auth", get(&m.datagrams_dropped_auth)),
        ("replay", get(&m.datagrams_dropped_replay)),
    ];
    family(
        "raftlb_datagrams_dropped_total",
        "counter",
        "Datagrams dropped: undecodable, from outside nodes.txt, over the queue bound, not authentic, or replayed.",
        vec![(String::new(), dropped.iter().map(|(_, v)| v).sum())],
    );
    family(
        "raftlb_datagrams_dropped_by_reason_total",
        "counter",
        "Dropped datagrams by reason.",
        dropped
            .iter()
            .map(|(r, v)| (format!("{{reason=\"{r}\"}}"), *v))
            .collect(),
    );
    family(
        "raftlb_datagrams_received_total",
        "counter",
        "Datagrams received.",
        vec![(String::new(), get(&m.datagrams_received))],
    );
    family(
        "raftlb_datagrams_sent_total",
        "counter",
        "Datagrams sent.",
        vec![(String::new(), get(&m.datagrams_sent))],
    );
    family(
        "raftlb_reports_received_total",
        "counter",
        "Load reports accepted over HTTP.",
        vec![(String::new(), get(&h.reports_received))],
    );
    family(
        "raftlb_entries_applied_total",
        "counter",
        "Log entries applied.",
        vec![(String::new(), get(&m.entries_applied))],
    );
    family(
        "raftlb_snapshots_total",
        "counter",
        "Snapshots taken to compact the log.",
        vec![(String::new(), get(&m.snapshots_taken))],
    );
    family(
        "raftlb_snapshots_refused_total",
        "counter",
        "Snapshots from a leader that the load table could not restore: refused before anything was written.",
        vec![(String::new(), get(&m.snapshots_refused))],
    );
    family(
        "raftlb_note_requests_total",
        "counter",
        "Note requests answered, by outcome.",
        vec![
            ("{outcome=\"written\"}".into(), get(&m.note_writes)),
            ("{outcome=\"read\"}".into(), get(&m.note_reads)),
            ("{outcome=\"unavailable\"}".into(), get(&m.note_unavailable)),
        ],
    );
    let responses = h.responses();
    family(
        "raftlb_http_responses_total",
        "counter",
        "HTTP answers by status code.",
        responses
            .iter()
            .map(|(code, n)| (format!("{{code=\"{code}\"}}"), *n))
            .collect(),
    );
    family(
        "raftlb_http_connections_refused_total",
        "counter",
        "Connections answered 503 and closed beyond a connection cap.",
        vec![
            ("{cap=\"total\"}".into(), get(&h.refused_total_cap)),
            (
                "{cap=\"per_source\"}".into(),
                get(&h.refused_per_source_cap),
            ),
        ],
    );
    family(
        "raftlb_http_too_large_total",
        "counter",
        "Requests refused for size: a head over 8 KiB (431) or a body over its route's limit (413).",
        vec![
            ("{part=\"head\"}".into(), get(&h.heads_too_large)),
            ("{part=\"body\"}".into(), get(&h.bodies_too_large)),
        ],
    );
    family(
        "raftlb_http_timeouts_total",
        "counter",
        "Connections cut by a timeout, by what they were doing.",
        vec![
            ("{phase=\"head\"}".into(), get(&h.timeouts_head)),
            ("{phase=\"body\"}".into(), get(&h.timeouts_body)),
            ("{phase=\"write\"}".into(), get(&h.timeouts_write)),
        ],
    );
    let mut forwards = h.forwards();
    // Every server of the table has its series from the start, at 0, so a rate
    // over the first requests is right and a server never chosen shows as such.
    for (server, _) in node.table().servers() {
        forwards.entry(server.clone()).or_default();
    }
    let label = |server: &str, result: &str| {
        format!(
            "{{server=\"{}\",result=\"{result}\"}}",
            escape_label(server)
        )
    };
    family(
        "raftlb_forwards_total",
        "counter",
        "Prime requests forwarded, by server and result.",
        forwards
            .iter()
            .flat_map(|(s, f)| [(label(s, "ok"), f.ok), (label(s, "failed"), f.failed)])
            .collect(),
    );
    forward_histogram(&mut out, &forwards);
    let scores = chooser.scores(&node.table(), SCORE_COST_MS, Instant::now());
    let name = "raftlb_policy_score";
    let _ = writeln!(
        out,
        "# HELP {name} The policy's score of each live server for a request of {SCORE_COST_MS} ms now: its expected completion time (ms once it answered this node; lowest is chosen).\n# TYPE {name} gauge"
    );
    for (server, score) in scores {
        let _ = writeln!(
            out,
            "{name}{{server=\"{}\"}} {score}",
            escape_label(&server)
        );
    }
    out
}

/// `raftlb_forward_seconds`: how long each server took to answer a forward
/// (failures included), as a Prometheus histogram per server.
fn forward_histogram(out: &mut String, forwards: &BTreeMap<String, Forwards>) {
    let name = "raftlb_forward_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time a forwarded prime request took, by server (connect to answer, failures included).\n# TYPE {name} histogram"
    );
    for (server, f) in forwards {
        let server = escape_label(server);
        let mut cumulative = 0;
        for (i, count) in f.buckets.iter().enumerate() {
            cumulative += count;
            let le = FORWARD_BUCKETS_SECONDS
                .get(i)
                .map_or("+Inf".to_string(), |le| le.to_string());
            let _ = writeln!(
                out,
                "{name}_bucket{{server=\"{server}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let sum = f.micros_sum as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{server=\"{server}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{server=\"{server}\"}} {cumulative}");
    }
}

/// Label values are escaped as the text format requires (server ids come
/// from the network).
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_forward_histogram_is_cumulative_per_server_with_sum_and_count() {
        let metrics = HttpCounters::default();
        metrics.count_forward("s1", true, Duration::from_micros(800));
        metrics.count_forward("s1", true, Duration::from_millis(30));
        metrics.count_forward("s1", false, Duration::from_secs(11));
        metrics.count_forward("s\"2", true, Duration::from_millis(2));
        let forwards = metrics.forwards();
        let mut out = String::new();
        forward_histogram(&mut out, &forwards);
        for line in [
            "# TYPE raftlb_forward_seconds histogram",
            "raftlb_forward_seconds_bucket{server=\"s1\",le=\"0.001\"} 1",
            "raftlb_forward_seconds_bucket{server=\"s1\",le=\"0.025\"} 1",
            "raftlb_forward_seconds_bucket{server=\"s1\",le=\"0.05\"} 2",
            "raftlb_forward_seconds_bucket{server=\"s1\",le=\"10\"} 2",
            "raftlb_forward_seconds_bucket{server=\"s1\",le=\"+Inf\"} 3",
            "raftlb_forward_seconds_sum{server=\"s1\"} 11.0308",
            "raftlb_forward_seconds_count{server=\"s1\"} 3",
            "raftlb_forward_seconds_bucket{server=\"s\\\"2\",le=\"0.0025\"} 1",
        ] {
            assert!(out.lines().any(|l| l == line), "no {line:?} in\n{out}");
        }
    }
}
