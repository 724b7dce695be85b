//! The cluster on hosts: `tests/support`'s `Cluster` (five nodes, three
//! workers and their daemons, temp nodes.txt, key and data dirs) with each
//! program placed on a host of its own from `net.rs`, so that nodes.txt names
//! the hosts' addresses. The cluster drops first, killing every process by
//! pid (and showing the logs when a test failed), then the hosts go.

use std::time::Duration;

use raftlb::status::Status;

use crate::net::{Host, Net, Unavailable};
use crate::support::{self, Cluster, Options, Proc};

pub const NODE_IDS: [&str; 5] = ["A", "B", "C", "D", "E"];
pub const SERVERS: usize = 3;

pub struct HostCluster {
    /// First, so that it drops first: no process runs when the hosts go.
    pub inner: Cluster,
    pub net: Net,
    /// A short budget for /status: the observer asks every 50 ms.
    agent: ureq::Agent,
}

pub fn server_id(i: usize) -> String {
    Cluster::server_id(i)
}

impl HostCluster {
    /// Makes the hosts and starts every program on its own; Err when this
    /// machine cannot make hosts (the caller skips).
    pub fn start() -> Result<HostCluster, Unavailable> {
        let workers: Vec<String> = (1..=SERVERS).map(|i| format!("worker-{i}")).collect();
        let daemons: Vec<String> = (1..=SERVERS).map(|i| format!("daemon-{i}")).collect();
        let mut names: Vec<&str> = NODE_IDS.to_vec();
        names.extend(workers.iter().chain(&daemons).map(String::as_str));
        let net = Net::create(&names)?;
        let placement = net.placement(&names[..5], &names[5..8], &names[8..]);
        let inner = Cluster::start(Options {
            hosts: Some(placement),
            ..Options::default()
        });
        assert_eq!(
            inner.ids, NODE_IDS,
            "the cluster's ids are the hosts' names"
        );
        Ok(HostCluster {
            inner,
            net,
            agent: support::client(Duration::from_millis(300), Duration::from_millis(600)),
        })
    }

    fn index(&self, id: &str) -> usize {
        NODE_IDS
            .iter()
            .position(|x| *x == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn nodes_file(&self) -> String {
        self.inner.nodes_file()
    }

    /// Node `id`'s `HOST:PORT`, as nodes.txt gives it.
    pub fn addr(&self, id: &str) -> String {
        format!(
            "{}:{}",
            self.net.host(id).ip,
            self.inner.ports[self.index(id)]
        )
    }

    pub fn url(&self, id: &str, path: &str) -> String {
        self.inner.url(self.index(id), path)
    }

    /// Node `id`'s /status, or None when it does not answer within 600 ms.
    pub fn status(&self, id: &str) -> Option<Status> {
        let mut resp = self.agent.get(&self.url(id, "/status")).call().ok()?;
        if resp.status().as_u16() != 200 {
            return None;
        }
        serde_json::from_str(&resp.body_mut().read_to_string().ok()?).ok()
    }

    /// The leader every node names, once all five answer and agree.
    pub fn agreed_leader(&self) -> Option<String> {
        let leader = self.inner.agreed_leader()?;
        Some(self.inner.ids[leader].clone())
    }

    /// Every process with its host: nodes, workers, then daemons, as the
    /// hosts were made.
    pub fn procs(&self) -> Vec<(&Proc, &Host)> {
        let c = &self.inner;
        let procs = c.nodes.iter().chain(&c.workers).chain(&c.daemons);
        procs
            .map(|p| p.as_ref().expect("every process runs"))
            .zip(&self.net.hosts)
            .collect()
    }

    /// Which processes are no longer running, with their exit codes.
    pub fn exited(&mut self) -> Vec<String> {
        let c = &mut self.inner;
        let all = c
            .nodes
            .iter_mut()
            .chain(&mut c.workers)
            .chain(&mut c.daemons);
        all.flatten()
            .filter_map(|p| match p.child.try_wait() {
                Ok(Some(status)) => Some(format!("{} exited: {status}", p.name)),
                _ => None,
            })
            .collect()
    }
}
