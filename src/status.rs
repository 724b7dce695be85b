//! The JSON of `GET /status`, shared by the node that serves it and the client
//! that prints it, so that the two cannot drift apart.

use serde::{Deserialize, Serialize};

/// One node's view of the cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// This node's id.
    pub id: String,
    /// `leader`, `follower` or `candidate` (a pre-candidate shows as candidate).
    pub role: String,
    /// The current Raft term.
    pub term: u64,
    /// The leader's id as this node knows it (its own when it leads), or null.
    pub leader: Option<String>,
    /// Highest log index known committed.
    pub commit_index: u64,
    /// Highest log index applied to this node's load table.
    pub applied_index: u64,
    /// True when the node runs without a cluster key (`--insecure`): anyone who
    /// can reach it can send it reports and Raft messages.
    #[serde(default)]
    pub insecure: bool,
    /// Every node of nodes.txt.
    pub nodes: Vec<NodeStatus>,
    /// The load table as applied on this node, sorted by id.
    pub servers: Vec<ServerStatus>,
}

/// One line of nodes.txt as `/status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: String,
    pub addr: String,
    /// Whether this node heard from that node recently (itself: always). Only
    /// the leader hears from everyone; a follower knows itself and the leader.
    #[serde(default)]
    pub reachable: Option<bool>,
    /// Whether it votes in the configuration in force (false: a learner).
    /// Absent in a status from a version before membership changes: true.
    #[serde(default = "voter_by_default")]
    pub voter: bool,
}

fn voter_by_default() -> bool {
    true
}

/// One server of the agreed load table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub id: String,
    pub url: String,
    pub cpu: f64,
    pub wait: f64,
    pub alive: bool,
    /// Milliseconds since this node applied the server's last report.
    pub age_ms: u64,
}
