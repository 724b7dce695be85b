//! The reference for failover and replication: a 5-member etcd cluster on free
//! loopback ports, heartbeat 50 ms and election timeout 300 ms (raftlb's own
//! heartbeat, and the top of its 150-300 ms election range), data dirs in a
//! temp dir. etcd fsyncs its WAL before acknowledging, as raftlb does.
//!
//! Members are found by their `/v3/maintenance/status` (the gRPC gateway):
//! `header.member_id` names the member that answered, `leader` the leader it
//! follows, `raftIndex` how far its log goes.

use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;

use crate::http;
use crate::procs::Guard;
use crate::support::{free_port, wait_for};

pub const HEARTBEAT_MS: u64 = 50;
pub const ELECTION_MS: u64 = 300;

/// What one member says about itself and the cluster.
pub struct MemberStatus {
    pub member_id: String,
    /// The leader's member id; None while the member knows no leader.
    pub leader: Option<String>,
    pub raft_index: u64,
}

pub struct Etcd {
    dir: TempDir,
    pub client_ports: Vec<u16>,
    peer_ports: Vec<u16>,
    pub members: Vec<Option<Guard>>,
    /// `header.member_id` of member i, learned once it answered.
    ids: Vec<String>,
    agent: ureq::Agent,
    starts: usize,
}

impl Etcd {
    /// Starts `size` members and waits until they all answer and agree on a leader.
    pub fn start(size: usize) -> Result<Etcd, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let mut etcd = Etcd {
            dir,
            client_ports: (0..size).map(|_| free_port()).collect(),
            peer_ports: (0..size).map(|_| free_port()).collect(),
            members: Vec::new(),
            ids: Vec::new(),
            agent: http::agent(Duration::from_millis(500)),
            starts: 0,
        };
        for i in 0..size {
            let member = etcd.spawn(i)?;
            etcd.members.push(Some(member));
        }
        for i in 0..size {
            let id = wait_for("etcd members to answer", Duration::from_secs(30), || {
                etcd.status(i).map(|s| s.member_id)
            });
            etcd.ids.push(id);
        }
        etcd.wait_for_leader(Duration::from_secs(30));
        Ok(etcd)
    }

    fn name(i: usize) -> String {
        format!("m{i}")
    }

    /// The command line of member i; the same for its first start and its
    /// restarts (a member with a data dir ignores the `--initial-*` flags).
    pub fn args(&self, i: usize) -> Vec<String> {
        let peer = |k: usize| format!("http://127.0.0.1:{}", self.peer_ports[k]);
        let client = format!("http://127.0.0.1:{}", self.client_ports[i]);
        let cluster: Vec<String> = (0..self.client_ports.len())
            .map(|k| format!("{}={}", Etcd::name(k), peer(k)))
            .collect();
        let data = self.dir.path().join(Etcd::name(i));
        let flags = [
            ("--name", Etcd::name(i)),
            ("--data-dir", data.display().to_string()),
            ("--listen-client-urls", client.clone()),
            ("--advertise-client-urls", client),
            ("--listen-peer-urls", peer(i)),
            ("--initial-advertise-peer-urls", peer(i)),
            ("--initial-cluster", cluster.join(",")),
            ("--initial-cluster-state", "new".into()),
            ("--initial-cluster-token", "raftlb-bench".into()),
            ("--heartbeat-interval", HEARTBEAT_MS.to_string()),
            ("--election-timeout", ELECTION_MS.to_string()),
            ("--logger", "zap".into()),
            ("--log-outputs", "stderr".into()),
            ("--log-level", "warn".into()),
        ];
        flags
            .into_iter()
            .flat_map(|(flag, value)| [flag.to_string(), value])
            .collect()
    }

    fn spawn(&mut self, i: usize) -> Result<Guard, String> {
        self.starts += 1;
        let log: PathBuf = self
            .dir
            .path()
            .join(format!("{}.{}.log", Etcd::name(i), self.starts));
        Guard::spawn(
            &format!("etcd {}", Etcd::name(i)),
            "etcd",
            &self.args(i),
            &log,
        )
    }

    pub fn size(&self) -> usize {
        self.members.len()
    }

    pub fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.client_ports[i])
    }

    pub fn live(&self) -> Vec<usize> {
        (0..self.size())
            .filter(|i| self.members[*i].is_some())
            .collect()
    }

    pub fn status(&self, i: usize) -> Option<MemberStatus> {
        let url = format!("{}/v3/maintenance/status", self.url(i));
        let (code, body) = http::send(&self.agent, "POST", &url, b"{}")?;
        let v: serde_json::Value = serde_json::from_str(&body).ok().filter(|_| code == 200)?;
        let text = |x: &serde_json::Value| x.as_str().map(str::to_string);
        Some(MemberStatus {
            member_id: text(&v["header"]["member_id"])?,
            // proto3 JSON leaves out a zero: no leader.
            leader: text(&v["leader"]).filter(|l| l != "0"),
            raft_index: text(&v["raftIndex"])
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
        })
    }

    /// The member every live member names as leader, once they agree on a live one.
    pub fn agreed_leader(&self) -> Option<usize> {
        let mut leader = None;
        for i in self.live() {
            let named = self.status(i)?.leader?;
            let l = self.ids.iter().position(|id| *id == named)?;
            if leader.is_some_and(|x| x != l) || self.members[l].is_none() {
                return None;
            }
            leader = Some(l);
        }
        leader
    }

    pub fn wait_for_leader(&self, limit: Duration) -> usize {
        wait_for("an agreed etcd leader", limit, || self.agreed_leader())
    }

    /// SIGKILLs member i.
    pub fn kill(&mut self, i: usize) {
        if let Some(member) = self.members[i].take() {
            member.kill();
        }
    }

    /// Starts member i again from its data dir.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        assert!(self.members[i].is_none(), "etcd member {i} is running");
        let member = self.spawn(i)?;
        self.members[i] = Some(member);
        Ok(())
    }
}
