//! The cluster on hosts: `tests/support`'s `Cluster` (nodes, workers and
//! their daemons, temp nodes.txt, key and data dirs) with each program placed
//! on a host of its own from `net.rs`, so that nodes.txt names the hosts'
//! addresses. Spare hosts, made with the others, wait for nodes a test adds
//! later (a new machine for a membership change). The cluster drops first,
//! killing every process by pid (and showing the logs when a test failed),
//! then the hosts go.

use std::net::IpAddr;
use std::time::Duration;

use raftlb::status::Status;

use crate::net::{Host, Net, Unavailable};
use crate::sockets;
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
    /// Five nodes and three servers, each program on a host of its own; Err
    /// when this machine cannot make hosts (the caller skips).
    pub fn start() -> Result<HostCluster, Unavailable> {
        HostCluster::start_with(&NODE_IDS, SERVERS, &[])
    }

    /// Nodes `nodes` (their ids are their hosts' names) and `servers`
    /// workers with their daemons, each on a host of its own, and an empty
    /// host per name of `spares` for [`HostCluster::add_node`].
    pub fn start_with(
        nodes: &[&str],
        servers: usize,
        spares: &[&str],
    ) -> Result<HostCluster, Unavailable> {
        let workers: Vec<String> = (1..=servers).map(|i| format!("worker-{i}")).collect();
        let daemons: Vec<String> = (1..=servers).map(|i| format!("daemon-{i}")).collect();
        let (workers, daemons): (Vec<&str>, Vec<&str>) = (
            workers.iter().map(String::as_str).collect(),
            daemons.iter().map(String::as_str).collect(),
        );
        let names = [nodes, &workers[..], &daemons[..], spares].concat();
        let net = Net::create(&names)?;
        let placement = net.placement(nodes, &workers, &daemons);
        let inner = Cluster::start(Options {
            nodes: nodes.len(),
            workers: servers,
            hosts: Some(placement),
            ..Options::default()
        });
        assert_eq!(inner.ids, nodes, "the cluster's ids are the hosts' names");
        Ok(HostCluster {
            inner,
            net,
            agent: support::client(Duration::from_millis(300), Duration::from_millis(600)),
        })
    }

    /// Starts node `id`, not yet a member, on the spare host of that name,
    /// with a nodes file that lists every node so far and it (as a person
    /// adding a machine writes one); its index.
    pub fn add_node(&mut self, id: &str) -> usize {
        let on = (IpAddr::V4(self.net.host(id).ip), self.net.runner(id));
        let placement = self.inner.options.hosts.as_mut();
        placement.expect("a cluster on hosts").nodes.push(on);
        let i = self.inner.add_node_slot(id);
        self.inner.restart_node(i);
        i
    }

    /// Node `id`'s index in the cluster.
    pub fn index(&self, id: &str) -> usize {
        (self.inner.ids.iter())
            .position(|x| x == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// The ids of the nodes running now, in the cluster's order.
    pub fn live_ids(&self) -> Vec<String> {
        let live = self.inner.live().into_iter();
        live.map(|i| self.inner.ids[i].clone()).collect()
    }

    /// Node `id`'s `HOST:PORT`, as nodes.txt gives it.
    pub fn addr(&self, id: &str) -> String {
        self.inner.node_addr(self.index(id))
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

    /// The leader every running node names, once all answer and agree.
    pub fn agreed_leader(&self) -> Option<String> {
        let leader = self.inner.agreed_leader()?;
        Some(self.inner.ids[leader].clone())
    }

    /// The leader every node of `ids` names, once they all answer and agree.
    pub fn leader_named_by(&self, ids: &[String]) -> Option<String> {
        let named: Option<Vec<String>> = ids.iter().map(|id| self.status(id)?.leader).collect();
        let named = named?;
        let first = named.first()?;
        named.iter().all(|l| l == first).then(|| first.clone())
    }

    /// Every running process with its host: nodes, workers, then daemons.
    pub fn procs(&self) -> Vec<(&Proc, &Host)> {
        let c = &self.inner;
        let nodes = c.nodes.iter().zip(c.ids.clone());
        let workers = (c.workers.iter().enumerate()).map(|(i, p)| (p, format!("worker-{}", i + 1)));
        let daemons = (c.daemons.iter().enumerate()).map(|(i, p)| (p, format!("daemon-{}", i + 1)));
        nodes
            .chain(workers)
            .chain(daemons)
            .filter_map(|(p, host)| Some((p.as_ref()?, self.net.host(&host))))
            .collect()
    }

    /// Every socket of every running process is on its host's address
    /// (none on loopback, none on a wildcard), and each node listens on its
    /// nodes.txt address, UDP and TCP.
    pub fn assert_sockets_on_their_hosts(&self) {
        for (proc, host) in self.procs() {
            let sockets = sockets::of(proc.pid());
            let wrong: Vec<_> = sockets.iter().filter(|s| !s.is_on(host.ip)).collect();
            assert!(
                wrong.is_empty(),
                "{} on host {} ({}) has sockets elsewhere: {wrong:?}",
                proc.name,
                host.name,
                host.ip
            );
            if self.inner.ids.contains(&host.name) {
                let addr = self.addr(&host.name);
                for udp in [false, true] {
                    assert!(
                        sockets
                            .iter()
                            .any(|s| s.listens(udp) && format!("{}:{}", s.ip, s.port) == addr),
                        "node {} does not listen on {addr} ({}): {sockets:?}",
                        host.name,
                        if udp { "udp" } else { "tcp" }
                    );
                }
            }
        }
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
