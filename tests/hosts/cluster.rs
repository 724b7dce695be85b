//! The cluster on hosts: five nodes, three workers and their daemons, each
//! process in a host (network namespace) of its own from `net.rs`, with a temp
//! nodes.txt naming the nodes' host addresses, a temp cluster key and temp
//! data dirs. Every process is SIGKILLed by pid when the cluster drops (its
//! `Proc`), before the hosts are deleted; a failing test shows the logs.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use raftlb::status::Status;

use crate::net::{Net, Unavailable};
use crate::support::{self, Proc};

/// Every node's port (UDP and TCP): each host has its own address, so they can
/// all use the same one, as on real machines.
pub const NODE_PORT: u16 = 34572;
pub const WORKER_PORT: u16 = 13337;
pub const NODE_IDS: [&str; 5] = ["A", "B", "C", "D", "E"];
pub const SERVERS: usize = 3;

pub struct HostCluster {
    pub nodes: Vec<Proc>,
    pub workers: Vec<Proc>,
    pub daemons: Vec<Proc>,
    /// Nodes' data dirs, nodes.txt, the key and the logs; removed after the
    /// processes above are killed (fields drop in order).
    pub dir: tempfile::TempDir,
    /// Last: the hosts go once nothing runs in them.
    pub net: Net,
    agent: ureq::Agent,
}

pub fn worker_host(i: usize) -> String {
    format!("worker-{}", i + 1)
}

pub fn daemon_host(i: usize) -> String {
    format!("daemon-{}", i + 1)
}

pub fn server_id(i: usize) -> String {
    format!("server-{}", i + 1)
}

impl HostCluster {
    /// Makes the hosts and starts every process on its own; Err when this
    /// machine cannot make hosts (the caller skips).
    pub fn start() -> Result<HostCluster, Unavailable> {
        let mut names: Vec<String> = NODE_IDS.iter().map(|s| s.to_string()).collect();
        names.extend((0..SERVERS).map(worker_host));
        names.extend((0..SERVERS).map(daemon_host));
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let net = Net::create(&names)?;
        let dir = tempfile::tempdir().expect("temp dir");
        let text: String = NODE_IDS
            .iter()
            .map(|id| format!("{id} {}:{NODE_PORT}\n", net.host(id).ip))
            .collect();
        std::fs::write(dir.path().join("nodes.txt"), text).expect("write nodes.txt");
        raftlb::auth::keygen(&dir.path().join(support::KEY_FILE)).expect("write the cluster key");
        let mut cluster = HostCluster {
            nodes: Vec::new(),
            workers: Vec::new(),
            daemons: Vec::new(),
            dir,
            net,
            agent: support::client(Duration::from_millis(300), Duration::from_millis(600)),
        };
        for id in NODE_IDS {
            let p = cluster.spawn_node(id);
            cluster.nodes.push(p);
        }
        for i in 0..SERVERS {
            let w = cluster.spawn_worker(i);
            cluster.workers.push(w);
            let d = cluster.spawn_daemon(i);
            cluster.daemons.push(d);
        }
        Ok(cluster)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn nodes_file(&self) -> String {
        self.path("nodes.txt").display().to_string()
    }

    fn key_args(&self) -> Vec<String> {
        vec![
            "--key".into(),
            self.path(support::KEY_FILE).display().to_string(),
        ]
    }

    /// Starts `program` with `args` in host `host`; its output goes to LOG.log.
    fn spawn_on(&self, host: &str, log: &str, program: &str, args: Vec<String>) -> Proc {
        let mut full = self.net.runner(host);
        let runner = full.remove(0);
        full.push(program.to_string());
        full.extend(args);
        let path = self.path(&format!("{log}.log"));
        support::spawn(log, &runner, &full, &path)
    }

    fn spawn_node(&self, id: &str) -> Proc {
        let mut args = vec![
            "--id".into(),
            id.into(),
            "--nodes".into(),
            self.nodes_file(),
            "--data-dir".into(),
            self.path(&format!("data-{id}")).display().to_string(),
            "--dead-after-ms".into(),
            "1000".into(),
        ];
        args.extend(self.key_args());
        self.spawn_on(id, &format!("node-{id}"), support::NODE, args)
    }

    pub fn worker_ip(&self, i: usize) -> Ipv4Addr {
        self.net.host(&worker_host(i)).ip
    }

    fn spawn_worker(&self, i: usize) -> Proc {
        let args = vec![
            "--host".into(),
            self.worker_ip(i).to_string(),
            "--port".into(),
            WORKER_PORT.to_string(),
        ];
        self.spawn_on(&worker_host(i), &worker_host(i), support::WORKER, args)
    }

    fn spawn_daemon(&self, i: usize) -> Proc {
        let mut args = vec![
            "--worker".into(),
            format!("http://{}:{WORKER_PORT}", self.worker_ip(i)),
            "--id".into(),
            server_id(i),
            "--nodes".into(),
            self.nodes_file(),
            "--interval-ms".into(),
            "100".into(),
        ];
        args.extend(self.key_args());
        self.spawn_on(&daemon_host(i), &daemon_host(i), support::DAEMON, args)
    }

    /// `http://IP:PORT` of node `id`, on its host's address.
    pub fn base_url(&self, id: &str) -> String {
        format!("http://{}:{NODE_PORT}", self.net.host(id).ip)
    }

    pub fn url(&self, id: &str, path: &str) -> String {
        format!("{}{path}", self.base_url(id))
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
        let mut agreed: Option<String> = None;
        for id in NODE_IDS {
            let leader = self.status(id)?.leader?;
            if agreed.as_ref().is_some_and(|l| *l != leader) {
                return None;
            }
            agreed = Some(leader);
        }
        agreed
    }

    /// Which processes are no longer running, with their exit codes.
    pub fn exited(&mut self) -> Vec<String> {
        let all = self
            .nodes
            .iter_mut()
            .chain(&mut self.workers)
            .chain(&mut self.daemons);
        all.filter_map(|p| match p.child.try_wait() {
            Ok(Some(status)) => Some(format!("{} exited: {status}", p.name)),
            _ => None,
        })
        .collect()
    }

    /// The last 30 lines of every log, for a failing test's message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        paths.sort();
        for p in paths
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
        {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            out += &format!("--- {}\n", p.display());
            for line in tail.iter().rev() {
                out += line;
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for HostCluster {
    /// A failing test shows what the processes said; the processes are killed
    /// by their own drops right after, then the hosts are deleted.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}
