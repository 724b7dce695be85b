//! The daemon's targets follow the cluster's configuration: every
//! `REFRESH_INTERVAL` a thread of its own asks the nodes' `/status`, one at a
//! time, and hands the main loop nodes.txt's nodes plus the members nodes.txt
//! lacks (`client::member::merge_members`), so a node added by `raftlb member
//! add` gets reports without a restart of the daemon.
//!
//! The thread does the waiting (calls bounded by `REPORT_TIMEOUTS`, and DNS
//! for a new member's host), never the report loop, which only picks up a
//! finished list. No answer keeps the list it had; nodes.txt's nodes are never
//! dropped.

use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use log::debug;

use super::{DaemonError, REPORT_TIMEOUTS};
use crate::client::http;
use crate::client::member::{merge_members, parse_configuration};
use crate::nodes::NodeEntry;

/// How often the configuration is asked for: membership changes are rare,
/// and a new member gets reports this long after it joined, at the latest.
pub(crate) const REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// New target lists waiting for the main loop; it takes them every tick, so
/// more than one is rare (and the newest is the one used).
const QUEUE_LISTS: usize = 2;

/// The targets a `/status` body gives: `base` (nodes.txt) first, whole, then
/// the members it lacks; None when the body holds no configuration.
pub(crate) fn targets_from_status(base: &[NodeEntry], body: &str) -> Option<Vec<NodeEntry>> {
    let config = parse_configuration(body)
        .map_err(|e| debug!("bad /status JSON: {e}"))
        .ok()?;
    let merged = merge_members(base, &config.members);
    for skipped in &merged.skipped {
        debug!("configuration of node {}: {skipped}", config.seen_by);
    }
    Some(merged.entries)
}

/// The refreshing thread and the lists it found.
pub(crate) struct Refresher {
    lists: Receiver<Vec<NodeEntry>>,
    /// Dropped to stop the thread.
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Refresher {
    /// Starts the thread, asking every `interval`, from `base` (nodes.txt).
    pub fn start(base: Vec<NodeEntry>, interval: Duration) -> Result<Refresher, DaemonError> {
        let (stop, stopped) = crossbeam_channel::bounded(1);
        let (found, lists) = crossbeam_channel::bounded(QUEUE_LISTS);
        let thread = std::thread::Builder::new()
            .name("members".to_string())
            .spawn(move || refresh(&base, interval, &stopped, &found))
            .map_err(|e| DaemonError::Report(format!("cannot start the members thread: {e}")))?;
        Ok(Refresher {
            lists,
            stop,
            thread,
        })
    }

    /// The newest list found since the last call, if any.
    pub fn latest(&self) -> Option<Vec<NodeEntry>> {
        self.lists.try_iter().last()
    }

    /// Stops the thread; it ends within one call's timeout.
    pub fn stop(self) {
        drop(self.stop);
        if self.thread.join().is_err() {
            log::warn!("the members thread panicked");
        }
    }
}

/// The thread's loop: until stopped, wait `interval`, ask, and hand over a
/// list that differs from the last one handed over.
fn refresh(
    base: &[NodeEntry],
    interval: Duration,
    stopped: &Receiver<()>,
    found: &Sender<Vec<NodeEntry>>,
) {
    let agent = http::agent(REPORT_TIMEOUTS, false);
    let mut targets = base.to_vec();
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
        let Some(learned) = ask(base, &targets, &agent, stopped) else {
            continue;
        };
        // Full: the main loop has not taken the last ones; try next time.
        if learned != targets && found.try_send(learned.clone()).is_ok() {
            targets = learned;
        }
    }
}

/// Asks the nodes of `targets` in order for `/status`; the first
/// configuration found gives the new targets. Stops early when told to.
fn ask(
    base: &[NodeEntry],
    targets: &[NodeEntry],
    agent: &ureq::Agent,
    stopped: &Receiver<()>,
) -> Option<Vec<NodeEntry>> {
    for node in targets {
        if !matches!(stopped.try_recv(), Err(TryRecvError::Empty)) {
            return None;
        }
        let url = format!("{}/status", http::node_base_url(node));
        match http::get(agent, &url) {
            Ok(reply) if reply.status == 200 => {
                if let Some(learned) = targets_from_status(base, &reply.body) {
                    return Some(learned);
                }
            }
            Ok(reply) => debug!("node {} answered {} to /status", node.id, reply.status),
            Err(e) => debug!("node {} gave no /status: {e}", node.id),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::Nodes;

    #[test]
    fn a_status_adds_new_members_after_nodes_txt_and_keeps_nodes_txt() {
        let base = Nodes::parse("A 127.0.0.1:1\nB 127.0.0.1:2\n", "n")
            .expect("valid")
            .entries()
            .to_vec();
        let body = r#"{"id":"A","role":"leader","term":2,"leader":"A","commit_index":1,
            "applied_index":1,"nodes":[{"id":"A","addr":"127.0.0.1:1","voter":true},
            {"id":"F","addr":"127.0.0.1:6","voter":false},{"id":"G","addr":"nowhere"},
            {"id":"H","addr":"127.0.0.1:8"}],"servers":[]}"#;
        let targets = targets_from_status(&base, body).expect("a configuration");
        let ids: Vec<&str> = targets.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["A", "B", "F", "H"], "B kept, G's bad address skipped");
        assert_eq!(targets[2].socket, "127.0.0.1:6".parse().expect("literal"));
        assert_eq!(targets_from_status(&base, "<html>"), None);
        assert_eq!(targets_from_status(&base, "{\"id\":\"A\"}"), None);
    }

    #[test]
    fn the_refresher_stops_at_once_and_finds_nothing_without_nodes() {
        let base = Nodes::parse("A 127.0.0.1:1\n", "n")
            .expect("valid")
            .entries()
            .to_vec();
        let refresher =
            Refresher::start(base, Duration::from_millis(10)).expect("the thread starts");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(refresher.latest(), None, "nothing listens on port 1");
        let started = std::time::Instant::now();
        refresher.stop();
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
