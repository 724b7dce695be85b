//! The reference for failover and replication: a 5-member etcd cluster on free
//! loopback ports, heartbeat 50 ms and election timeout 300 ms (raftlb's own
//! heartbeat, and the top of its 150-300 ms election range), data dirs in a
//! temp dir. etcd fsyncs its WAL before acknowledging, as raftlb does.
//!
//! Members are found by their `/v3/maintenance/status` (the gRPC gateway):
//! `header.member_id` names the member that answered, `leader` the leader it
//! follows, `raftIndex` how far its log goes. Membership changes go through
//! `etcdctl` (the membership section), as an operator makes them; a member
//! added that way is started with `--initial-cluster-state existing`.

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
    /// `header.member_id` of member i, learned once it answered (empty
    /// until then).
    ids: Vec<String>,
    /// The members the cluster was started with; the others were added later.
    founders: usize,
    /// `--initial-cluster` of each member added later, as `etcdctl member
    /// add` printed it: the members then and itself (None for a founder).
    joined: Vec<Option<String>>,
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
            founders: size,
            joined: vec![None; size],
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

    pub fn name(i: usize) -> String {
        format!("m{i}")
    }

    fn peer_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.peer_ports[i])
    }

    /// `NAME=PEER-URL` of member i, as `--initial-cluster` lists it.
    fn initial(&self, i: usize) -> String {
        format!("{}={}", Etcd::name(i), self.peer_url(i))
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(Etcd::name(i))
    }

    /// The command line of member i; the same for its first start and its
    /// restarts (a member with a data dir ignores the `--initial-*` flags).
    pub fn args(&self, i: usize) -> Vec<String> {
        let client = format!("http://127.0.0.1:{}", self.client_ports[i]);
        let (cluster, state) = match &self.joined[i] {
            Some(cluster) => (cluster.clone(), "existing"),
            None => {
                let founders: Vec<String> = (0..self.founders).map(|k| self.initial(k)).collect();
                (founders.join(","), "new")
            }
        };
        let flags = [
            ("--name", Etcd::name(i)),
            ("--data-dir", self.data_dir(i).display().to_string()),
            ("--listen-client-urls", client.clone()),
            ("--advertise-client-urls", client),
            ("--listen-peer-urls", self.peer_url(i)),
            ("--initial-advertise-peer-urls", self.peer_url(i)),
            ("--initial-cluster", cluster),
            ("--initial-cluster-state", state.into()),
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

    /// Stops member i as an operator does: SIGTERM (a leader hands over
    /// leadership before it stops), SIGKILL after the guard's grace.
    pub fn stop(&mut self, i: usize) {
        drop(self.members[i].take());
    }

    /// Starts member i again from its data dir.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        assert!(self.members[i].is_none(), "etcd member {i} is running");
        let member = self.spawn(i)?;
        self.members[i] = Some(member);
        Ok(())
    }
}

/// Membership changes, through `etcdctl` as an operator makes them.
impl Etcd {
    /// `etcdctl --endpoints LIVE ARGS…`: its stdout, or its exit and last
    /// line of stderr. Bounded by etcdctl's own dial (2 s) and command (5 s)
    /// timeouts.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String, String> {
        let endpoints: Vec<String> = self.live().iter().map(|&i| self.url(i)).collect();
        let out = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(endpoints.join(","))
            .args(args)
            .output()
            .map_err(|e| format!("etcdctl: {e}"))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("").trim().to_string();
        Err(format!(
            "etcdctl {}: {} ({last})",
            args.join(" "),
            out.status
        ))
    }

    /// Member i's id as etcdctl writes it (hex), once it answered.
    pub fn hex_id(&self, i: usize) -> Option<String> {
        let id: u64 = self.ids.get(i)?.parse().ok()?;
        Some(format!("{id:x}"))
    }

    /// Makes room for a new member (new name, new ports), not started: its
    /// `--initial-cluster` is the live members and it. Returns its index.
    pub fn add_slot(&mut self) -> usize {
        let i = self.size();
        self.client_ports.push(free_port());
        self.peer_ports.push(free_port());
        self.members.push(None);
        self.ids.push(String::new());
        let mut cluster: Vec<String> = self.live().iter().map(|&k| self.initial(k)).collect();
        cluster.push(self.initial(i));
        self.joined.push(Some(cluster.join(",")));
        i
    }

    /// `member add` for the slot made by `add_slot`, as a learner; its id (hex).
    pub fn add_learner(&mut self, i: usize) -> Result<String, String> {
        let peer = format!("--peer-urls={}", self.peer_url(i));
        let out = self.etcdctl(&["member", "add", &Etcd::name(i), &peer, "--learner"])?;
        // "Member 5f2b1c… added to cluster …"
        let hex = out
            .split_whitespace()
            .skip_while(|w| *w != "Member")
            .nth(1)
            .ok_or_else(|| format!("member add: no id in {out:?}"))?;
        let id = u64::from_str_radix(hex, 16).map_err(|e| format!("member add: {hex}: {e}"))?;
        self.ids[i] = id.to_string();
        Ok(hex.to_string())
    }

    /// Whether member i answers a linearizable read (a range without
    /// `serializable`: it goes through the leader's read index).
    pub fn linearizable_read(&self, i: usize) -> bool {
        let url = format!("{}/v3/kv/range", self.url(i));
        http::send(&self.agent, "POST", &url, br#"{"key":"Zm9v"}"#)
            .is_some_and(|(code, _)| code == 200)
    }
}
