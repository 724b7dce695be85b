//! One sender thread per node, so that a dead or slow node never delays the
//! reports to the others.
//!
//! The main loop hands each report to every node's thread through a channel of
//! capacity `QUEUE_REPORTS`; a thread that is still busy with an earlier report
//! (a node that black-holes packets costs a full timeout) finds several queued
//! and sends only the newest, because a node drops reports whose `seq` is not
//! above the last one anyway. When the queue is full the report is skipped for
//! that node alone. Each thread logs only when its node changes between
//! accepting and failing, not per report. The targets change with the
//! configuration (`members.rs`): `Senders::retarget` keeps the threads of the
//! nodes that stay.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use log::{debug, info, warn};

use crate::client::http::{self, Reply};
use crate::nodes::NodeEntry;

/// Reports waiting per node: one in flight plus one newer is all that matters.
pub(crate) const QUEUE_REPORTS: usize = 2;

/// A report body and its `X-Raftlb-Auth` tag (None when `--insecure`),
/// signed once and shared by all nodes' threads.
pub(crate) struct SignedReport {
    pub json: Vec<u8>,
    pub tag: Option<String>,
}

/// What the main loop hands to every node's thread.
pub(crate) type Body = Arc<SignedReport>;

/// The running sender threads.
pub(crate) struct Senders {
    /// Each target and its thread's queue, in the targets' order.
    queues: Vec<(NodeEntry, Sender<Body>)>,
    /// Every thread not yet known finished, including those of targets
    /// dropped by `retarget` (they end after their call in flight).
    threads: Vec<JoinHandle<()>>,
}

impl Senders {
    /// Starts one thread per node, all posting with `agent`.
    pub fn start(nodes: &[NodeEntry], agent: &ureq::Agent) -> Result<Senders, super::DaemonError> {
        let mut senders = Senders {
            queues: Vec::with_capacity(nodes.len()),
            threads: Vec::with_capacity(nodes.len()),
        };
        for node in nodes {
            senders.spawn(node, agent)?;
        }
        Ok(senders)
    }

    /// Sends to `nodes` from now on: a node already served (same id and
    /// address) keeps its thread, a new one gets a thread, a node no longer
    /// listed has its queue closed. A thread that cannot start is logged and
    /// its node skipped, to be tried with the next list.
    pub fn retarget(&mut self, nodes: &[NodeEntry], agent: &ureq::Agent) {
        let mut old = std::mem::take(&mut self.queues);
        self.threads.retain(|t| !t.is_finished());
        for node in nodes {
            match old.iter().position(|(served, _)| served == node) {
                Some(at) => self.queues.push(old.swap_remove(at)),
                None => {
                    if let Err(e) = self.spawn(node, agent) {
                        warn!("{e}");
                    }
                }
            }
        }
    }

    fn spawn(&mut self, node: &NodeEntry, agent: &ureq::Agent) -> Result<(), super::DaemonError> {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_REPORTS);
        let url = format!("{}/report", http::node_base_url(node));
        let (id, agent) = (node.id.clone(), agent.clone());
        let thread = std::thread::Builder::new()
            .name(format!("report-{}", node.id))
            .spawn(move || post_reports(&id, &url, &agent, &rx))
            .map_err(|e| {
                let id = &node.id;
                super::DaemonError::Report(format!(
                    "cannot start the sender thread of node {id}: {e}"
                ))
            })?;
        self.queues.push((node.clone(), tx));
        self.threads.push(thread);
        Ok(())
    }

    /// Queues `body` for every node without waiting for any of them.
    pub fn send(&self, body: &Body) {
        for (node, queue) in &self.queues {
            let id = &node.id;
            match queue.try_send(Arc::clone(body)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => debug!("node {id} is slow: report skipped"),
                Err(TrySendError::Disconnected(_)) => warn!("sender of node {id} has stopped"),
            }
        }
    }

    /// Closes the queues and waits for the threads; each finishes its call in
    /// flight, which the agent's total timeout bounds.
    pub fn stop(self) {
        drop(self.queues);
        for thread in self.threads {
            if thread.join().is_err() {
                warn!("a report sender thread panicked");
            }
        }
    }
}

/// The loop of one node's thread: until the queue closes, post the newest
/// queued report and log changes of the node's state.
fn post_reports(id: &str, url: &str, agent: &ureq::Agent, queue: &Receiver<Body>) {
    // None until the first attempt, so a node that is down from the start is
    // reported once, and one that is up is not announced at info.
    let mut accepting: Option<bool> = None;
    while let Ok(mut body) = queue.recv() {
        while let Ok(newer) = queue.try_recv() {
            body = newer;
        }
        let outcome = match http::post_signed_json(agent, url, &body.json, body.tag.as_deref()) {
            Ok(Reply {
                status: 200..=299, ..
            }) => Ok(()),
            Ok(Reply { status, body, .. }) => {
                Err(format!("answered {status}: {}", first_line(&body)))
            }
            Err(reason) => Err(reason.to_string()),
        };
        let ok = outcome.is_ok();
        match (accepting, outcome) {
            (Some(true), Ok(())) | (Some(false), Err(_)) => {}
            (None, Ok(())) => debug!("node {id} accepts reports"),
            (Some(false), Ok(())) => info!("node {id} reachable again"),
            (_, Err(reason)) => info!("node {id} unreachable: {reason}"),
        }
        accepting = Some(ok);
    }
}

/// The first line of a node's answer, cut short: it goes into one log line.
fn first_line(body: &str) -> String {
    body.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}
