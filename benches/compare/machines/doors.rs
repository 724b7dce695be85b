//! Scenario 5, five doors: the weak machine's closed loop spread over all
//! five nodes (client thread i to node i mod 5, as DNS round robin spreads
//! clients) beside the same load through one node, measured just before in
//! the weak machine's rows. Each node chooses from its own view (its own
//! requests in flight, the service times it saw, the agreed table), so five
//! doors may herd where one does not. Shares are summed over the nodes'
//! forward counters.

use super::{percents, Bench, Measured, CLIENTS, SECTION};
use crate::support::Cluster;
use crate::table::{Report, Row};

/// The goal: p99 through five doors within this times one door's.
const GOAL_RATIO: f64 = 1.2;

impl Bench<'_> {
    pub(super) fn five_doors(&mut self, one: &Measured, report: &mut Report) -> Result<(), String> {
        let cluster = self.cluster;
        let nodes = cluster.nodes.len();
        let metrics: Vec<String> = (0..nodes).map(|i| cluster.url(i, "/metrics")).collect();
        let urls: Vec<String> = (0..nodes).map(|i| cluster.url(i, "")).collect();
        let forwards = || -> Vec<u64> {
            let all: Vec<_> = metrics
                .iter()
                .map(|m| crate::balancing::forwards(m))
                .collect();
            (0..3)
                .map(|s| {
                    let id = Cluster::server_id(s);
                    all.iter().map(|f| f.get(&id).copied().unwrap_or(0)).sum()
                })
                .collect()
        };
        let before = forwards();
        let targets: Vec<&str> = urls.iter().map(String::as_str).collect();
        let times = (self.load_secs(), super::WARMUP_SECS);
        let label = format!("raftlb, all {nodes} nodes");
        let load = self.load_for(&targets, &label, None, times, report)?;
        let after = forwards();
        let counts: Vec<u64> = (0..3).map(|s| after[s].saturating_sub(before[s])).collect();
        let five = Measured {
            load,
            shares: percents(&counts),
        };
        let ratio = five.load.p99_ms / one.load.p99_ms;
        report.row(
            Row::new(
                SECTION,
                format!(
                    "five doors: weak machine, mixed N, {CLIENTS} clients over the {nodes} nodes (thread i to node i mod {nodes}) vs through follower {}",
                    cluster.ids[self.node]
                ),
                five.text(),
            )
            .against(format!("one node: {}", one.text()))
            .ratio(five.load.p99_ms, one.load.p99_ms, "p99, five ÷ one")
            .goal(format!("p99 ≤ {GOAL_RATIO} × one node's"), ratio <= GOAL_RATIO),
        );
        Ok(())
    }
}
