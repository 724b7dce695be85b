//! Real processes on loopback for the system tests: a cluster of raftlb-node
//! processes with workers and daemons, on free ports, with a temp nodes.txt, a
//! temp cluster key and temp data dirs. Every process is killed by pid when the cluster drops, even
//! when the test fails; every wait is bounded in time.

#![allow(dead_code)] // each test file uses its own part of the harness

pub mod history;

use std::net::{IpAddr, Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use raftlb::status::Status;

/// The cluster tests start up to a dozen processes each; on a 2-core machine
/// running two clusters at once would turn election timeouts into noise.
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

pub fn exclusive() -> MutexGuard<'static, ()> {
    ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// A loopback port free for both UDP and TCP at the time of the call, and never
/// handed out before in this test process: a port probed free is released until
/// its program binds it, and a second call meanwhile must not get it again (seen:
/// a worker started on the port just given to a node that had not bound it yet).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..100 {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral tcp port");
        let port = tcp.local_addr().expect("bound").port();
        if !given.contains(&port) && UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no new port free for both udp and tcp after 100 tries");
}

/// Polls `check` every 20 ms until it returns Some, or panics after `limit`
/// naming `what`.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A started child, killed (SIGKILL) and reaped on drop.
pub struct Proc {
    pub name: String,
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal: "TERM", "KILL", "STOP" or "CONT".
    pub fn signal(&self, signal: &str) {
        send_signal(self.pid(), signal);
    }

    /// Waits for the process to exit; its exit code, or None on timeout.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `signal` ("TERM", "KILL", "STOP", "CONT", "INT") to `pid`.
pub fn send_signal(pid: u32, signal: &str) {
    let number = match signal {
        "TERM" => libc::SIGTERM,
        "KILL" => libc::SIGKILL,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        "INT" => libc::SIGINT,
        other => panic!("unknown signal {other}"),
    };
    let pid = libc::pid_t::try_from(pid).expect("a pid fits pid_t");
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let result = unsafe { libc::kill(pid, number) };
    assert_eq!(
        result,
        0,
        "kill -{signal} {pid}: {}",
        std::io::Error::last_os_error()
    );
}

/// SIGKILLs the process in `slot`, if any, waits for it and leaves the slot empty.
fn kill(slot: &mut Option<Proc>) {
    if let Some(mut p) = slot.take() {
        p.signal("KILL");
        p.wait_exit(Duration::from_secs(5));
    }
}

/// Node i's address: its host's, or loopback.
fn node_ip(options: &Options, i: usize) -> IpAddr {
    (options.hosts.as_ref()).map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |h| h.nodes[i].0)
}

/// `IP:PORT`, an IPv6 address in brackets.
fn addr(ip: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(ip, port).to_string()
}

/// [`spawn`], run through `on` (the command that puts a program on its host)
/// when given.
fn spawn_on(
    on: Option<Vec<String>>,
    name: &str,
    program: &str,
    args: Vec<String>,
    log: &Path,
) -> Proc {
    match on.as_deref() {
        Some([runner, before @ ..]) => {
            let full: Vec<String> = (before.iter().cloned())
                .chain(std::iter::once(program.to_string()))
                .chain(args)
                .collect();
            spawn(name, runner, &full, log)
        }
        _ => spawn(name, program, &args, log),
    }
}

pub fn spawn(name: &str, program: &str, args: &[String], log: &Path) -> Proc {
    let out = std::fs::File::create(log).expect("create the log file");
    let err = out.try_clone().expect("clone the log file");
    let child = Command::new(program)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    Proc {
        name: name.to_string(),
        child,
    }
}

pub const NODE: &str = env!("CARGO_BIN_EXE_raftlb-node");
pub const WORKER: &str = env!("CARGO_BIN_EXE_raftlb-worker");
pub const DAEMON: &str = env!("CARGO_BIN_EXE_raftlb-daemon");
pub const CLIENT: &str = env!("CARGO_BIN_EXE_raftlb");

/// The cluster key's file name in a test cluster's temp dir.
pub const KEY_FILE: &str = "cluster.key";

/// How a test cluster is set up.
pub struct Options {
    pub nodes: usize,
    pub workers: usize,
    pub dead_after_ms: u64,
    pub report_interval_ms: u64,
    /// Daemons report their own worker's CPU use (`--pid`) instead of the whole
    /// machine's, so that a worker slowed by an outside CPU hog shows it. Off by
    /// default: tests that restart a worker would leave its daemon watching the
    /// old pid.
    pub daemons_watch_worker_pid: bool,
    /// Daemon i reports the cpu cgroup at `daemon_cgroups[i]` (`--cgroup`),
    /// the machine its worker runs in, when given (over `--pid`).
    pub daemon_cgroups: Vec<PathBuf>,
    /// `--snapshot-entries` for the nodes; None keeps the node's default, as a
    /// benchmark wants, while a test of compaction sets a small one.
    pub snapshot_entries: Option<u64>,
    /// More flags for every node (e.g. `--forget-after 1s`).
    pub node_args: Vec<String>,
    /// Node i's data dir, e.g. a PowerFs mount; when empty, `data-<ID>` in
    /// the cluster's temp dir.
    pub data_dirs: Vec<PathBuf>,
    /// Nodes and daemons run with `--insecure` instead of the cluster key (the
    /// benchmark's "before the key" cluster).
    pub insecure: bool,
    /// Each program on a host of its own instead of all on loopback.
    pub hosts: Option<Placement>,
}

/// Where the programs run when each has a host (network namespace) of its
/// own: its address, and the command that runs a program there (e.g. `ip
/// netns exec NS`, which execs, so the child's pid is the program's).
#[derive(Clone, Debug)]
pub struct Placement {
    pub nodes: Vec<(IpAddr, Vec<String>)>,
    pub workers: Vec<(IpAddr, Vec<String>)>,
    pub daemons: Vec<Vec<String>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nodes: 5,
            workers: 3,
            dead_after_ms: 1000,
            report_interval_ms: 100,
            daemons_watch_worker_pid: false,
            daemon_cgroups: Vec::new(),
            snapshot_entries: None,
            node_args: Vec::new(),
            data_dirs: Vec::new(),
            insecure: false,
            hosts: None,
        }
    }
}

/// Nodes, workers and their daemons; index i of each vector is node/server i.
pub struct Cluster {
    pub ids: Vec<String>,
    pub ports: Vec<u16>,
    pub nodes: Vec<Option<Proc>>,
    pub worker_ports: Vec<u16>,
    pub workers: Vec<Option<Proc>>,
    pub daemons: Vec<Option<Proc>>,
    pub options: Options,
    /// The key flags nodes are (re)started with; `--key` and the cluster key by
    /// default. A rotation test changes them between restarts.
    pub node_key_args: Vec<String>,
    restarts: usize,
    /// Last, so that it is removed after every process above is killed (fields
    /// drop in order): a node still running would write into it meanwhile and
    /// leave a half-removed dir in /tmp.
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start(options: Options) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ids: Vec<String> = (0..options.nodes)
            .map(|i| ((b'A' + i as u8) as char).to_string())
            .collect();
        let ports: Vec<u16> = (0..options.nodes).map(|_| free_port()).collect();
        let text: String = (ids.iter().zip(&ports).enumerate())
            .map(|(i, (id, port))| format!("{id} {}\n", addr(node_ip(&options, i), *port)))
            .collect();
        std::fs::write(dir.path().join("nodes.txt"), text).expect("write nodes.txt");
        raftlb::auth::keygen(&dir.path().join(KEY_FILE)).expect("write the cluster key");
        let mut cluster = Cluster {
            dir,
            ids,
            ports,
            nodes: Vec::new(),
            worker_ports: Vec::new(),
            workers: Vec::new(),
            daemons: Vec::new(),
            options,
            node_key_args: Vec::new(),
            restarts: 0,
        };
        cluster.node_key_args = cluster.key_args();
        for i in 0..cluster.options.nodes {
            let p = cluster.spawn_node(i);
            cluster.nodes.push(Some(p));
        }
        for i in 0..cluster.options.workers {
            let port = free_port();
            cluster.worker_ports.push(port);
            let w = cluster.spawn_worker(i);
            cluster.workers.push(Some(w));
            let d = cluster.spawn_daemon(i);
            cluster.daemons.push(Some(d));
        }
        cluster
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn nodes_file(&self) -> String {
        self.path("nodes.txt").display().to_string()
    }

    /// The nodes file node i starts with: its own when it was added later
    /// (`add_node_slot`), else the cluster's.
    pub fn nodes_file_of(&self, i: usize) -> String {
        let own = self.path(&format!("nodes-{}.txt", self.ids[i]));
        if own.exists() {
            own.display().to_string()
        } else {
            self.nodes_file()
        }
    }

    /// Makes room for a new node `id` on a free port, not started: its own
    /// nodes file lists every node so far and it, as a person adding a
    /// machine writes one. Returns its index (`restart_node` starts it).
    pub fn add_node_slot(&mut self, id: &str) -> usize {
        let port = free_port();
        self.ids.push(id.to_string());
        self.ports.push(port);
        self.nodes.push(None);
        let text: String = (self.ids.iter().zip(&self.ports).enumerate())
            .map(|(i, (id, port))| format!("{id} {}\n", addr(node_ip(&self.options, i), *port)))
            .collect();
        std::fs::write(self.path(&format!("nodes-{id}.txt")), text).expect("write its nodes file");
        self.ids.len() - 1
    }

    /// `HOST:PORT` of node i, as nodes files write it.
    pub fn node_addr(&self, i: usize) -> String {
        addr(node_ip(&self.options, i), self.ports[i])
    }

    /// Node i's data dir.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        (self.options.data_dirs.get(i).cloned())
            .unwrap_or_else(|| self.path(&format!("data-{}", self.ids[i])))
    }

    /// The cluster key every node and daemon of this cluster gets with `--key`.
    pub fn key_file(&self) -> String {
        self.path(KEY_FILE).display().to_string()
    }

    /// `--key FILE`, or `--insecure` when the options say so.
    fn key_args(&self) -> Vec<String> {
        if self.options.insecure {
            vec!["--insecure".into()]
        } else {
            vec!["--key".into(), self.key_file()]
        }
    }

    /// The cluster's keys, to sign reports the way a daemon does.
    pub fn keys(&self) -> raftlb::auth::Keys {
        let key = raftlb::auth::read_key(&self.path(KEY_FILE)).expect("the cluster key");
        raftlb::auth::Keys::new(key, None)
    }

    /// `POST /report` to node i with `body`, signed with the cluster key.
    pub fn post_report(&self, i: usize, body: &[u8]) -> Option<Answer> {
        let tag = self.keys().sign_body(body);
        post_with(
            &self.url(i, "/report"),
            &[(raftlb::auth::AUTH_HEADER, &tag)],
            body,
        )
    }

    fn log(&mut self, name: &str) -> PathBuf {
        self.restarts += 1;
        self.path(&format!("{name}.{}.log", self.restarts))
    }

    pub fn spawn_node(&mut self, i: usize) -> Proc {
        let id = self.ids[i].clone();
        let data_dir = self.data_dir(i);
        let mut args = vec![
            "--id".into(),
            id.clone(),
            "--nodes".into(),
            self.nodes_file_of(i),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--dead-after-ms".into(),
            self.options.dead_after_ms.to_string(),
        ];
        args.extend(self.node_key_args.iter().cloned());
        args.extend(self.options.node_args.iter().cloned());
        if let Some(entries) = self.options.snapshot_entries {
            args.extend(["--snapshot-entries".into(), entries.to_string()]);
        }
        let log = self.log(&format!("node-{id}"));
        let on = self.options.hosts.as_ref().map(|h| h.nodes[i].1.clone());
        spawn_on(on, &format!("node {id}"), NODE, args, &log)
    }

    pub fn server_id(i: usize) -> String {
        format!("server-{}", i + 1)
    }

    pub fn spawn_worker(&mut self, i: usize) -> Proc {
        let host = self.options.hosts.as_ref().map(|h| h.workers[i].clone());
        let mut args = vec!["--port".into(), self.worker_ports[i].to_string()];
        if let Some((ip, _)) = &host {
            args.extend(["--host".into(), ip.to_string()]);
        }
        let log = self.log(&format!("worker-{i}"));
        spawn_on(
            host.map(|h| h.1),
            &format!("worker {i}"),
            WORKER,
            args,
            &log,
        )
    }

    /// `http://HOST:PORT` of worker i, as its daemon and the nodes reach it.
    pub fn worker_url(&self, i: usize) -> String {
        let ip = (self.options.hosts.as_ref())
            .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |h| h.workers[i].0);
        format!("http://{}", addr(ip, self.worker_ports[i]))
    }

    pub fn spawn_daemon(&mut self, i: usize) -> Proc {
        let mut args = vec![
            "--worker".into(),
            self.worker_url(i),
            "--id".into(),
            Cluster::server_id(i),
            "--nodes".into(),
            self.nodes_file(),
            "--interval-ms".into(),
            self.options.report_interval_ms.to_string(),
        ];
        args.extend(self.key_args());
        if let Some(cgroup) = self.options.daemon_cgroups.get(i) {
            args.extend(["--cgroup".to_string(), cgroup.display().to_string()]);
        } else if self.options.daemons_watch_worker_pid {
            let worker = self.workers[i]
                .as_ref()
                .expect("the worker starts before its daemon");
            args.extend(["--pid".to_string(), worker.pid().to_string()]);
        }
        let log = self.log(&format!("daemon-{i}"));
        let on = self.options.hosts.as_ref().map(|h| h.daemons[i].clone());
        spawn_on(on, &format!("daemon {i}"), DAEMON, args, &log)
    }

    /// `http://HOST:PORT{path}` of node i.
    pub fn url(&self, i: usize, path: &str) -> String {
        format!(
            "http://{}{path}",
            addr(node_ip(&self.options, i), self.ports[i])
        )
    }

    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect()
    }

    /// SIGKILLs node i.
    pub fn kill_node(&mut self, i: usize) {
        kill(&mut self.nodes[i]);
    }

    pub fn restart_node(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {i} is running");
        let p = self.spawn_node(i);
        self.nodes[i] = Some(p);
    }

    /// SIGKILLs daemon i: its server's reports stop.
    pub fn kill_daemon(&mut self, i: usize) {
        kill(&mut self.daemons[i]);
    }

    /// SIGKILLs worker i; its daemon keeps running and reporting failures.
    pub fn kill_worker(&mut self, i: usize) {
        kill(&mut self.workers[i]);
    }

    /// Starts worker i again on its port.
    pub fn restart_worker(&mut self, i: usize) {
        assert!(self.workers[i].is_none(), "worker {i} is running");
        let p = self.spawn_worker(i);
        self.workers[i] = Some(p);
    }

    pub fn status(&self, i: usize) -> Option<Status> {
        let (code, body, _) = get(&self.url(i, "/status"))?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// The leader index that every live node agrees on, once they do.
    pub fn agreed_leader(&self) -> Option<usize> {
        let mut leader = None;
        for i in self.live() {
            let s = self.status(i)?;
            let l = self
                .ids
                .iter()
                .position(|id| Some(id) == s.leader.as_ref())?;
            if leader.is_some_and(|x| x != l) || self.nodes[l].is_none() {
                return None;
            }
            leader = Some(l);
        }
        leader
    }

    pub fn wait_for_leader(&self, limit: Duration) -> usize {
        wait_for("an agreed leader", limit, || self.agreed_leader())
    }

    /// Waits until every live node shows every server with `alive`.
    pub fn wait_for_servers(&self, alive: &[bool], limit: Duration) {
        wait_for("the servers' liveness on every node", limit, || {
            self.live()
                .iter()
                .all(|i| {
                    self.status(*i).is_some_and(|s| {
                        alive.iter().enumerate().all(|(k, want)| {
                            s.servers
                                .iter()
                                .any(|sv| sv.id == Cluster::server_id(k) && sv.alive == *want)
                        })
                    })
                })
                .then_some(())
        });
    }

    /// Posts a report for `server` to node `via` the way a daemon does, with a
    /// growing seq every 100 ms, until every live node has applied one. A single
    /// report is best effort (202 means accepted, and a leader change can lose it);
    /// the next one supersedes it.
    pub fn report_until_applied(&self, via: usize, server: &str, limit: Duration) {
        let cluster = self;
        let start = Instant::now();
        let mut seq = 0u64;
        loop {
            seq += 1;
            let report = format!(
                r#"{{"server":"{server}","url":"http://127.0.0.1:9","cpu":1.0,"seq":{seq}}}"#
            );
            let answer = cluster.post_report(via, report.as_bytes());
            assert!(
                answer.as_ref().is_none_or(|a| a.code == 202),
                "report refused: {answer:?}"
            );
            let applied = cluster.live().iter().all(|i| {
                cluster
                    .status(*i)
                    .is_some_and(|s| s.servers.iter().any(|sv| sv.id == server))
            });
            if applied {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "report for {server} not applied within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The log files, for a failing test's message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            names.sort();
            for p in names
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "log"))
            {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                out += &format!("--- {}\n", p.display());
                for l in tail.iter().rev() {
                    out += l;
                    out.push('\n');
                }
            }
        }
        out
    }
}

impl Drop for Cluster {
    /// A failing test shows what the processes said (the processes themselves
    /// are killed by their own `Proc` drops right after).
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// `POST /admin/member` to node `via` with `body` (its `at` set to now),
/// signed with the cluster key (or sent with `tag` when given), as `raftlb
/// member` does: (status, body), or the error when no answer came within
/// `limit` (a change may wait for a learner to catch up).
pub fn post_member(
    cluster: &Cluster,
    via: usize,
    mut body: serde_json::Value,
    tag: Option<&str>,
    limit: Duration,
) -> Result<(u16, String), ureq::Error> {
    body["at"] = serde_json::json!(raftlb::server::admin::now_ms());
    let bytes = serde_json::to_vec(&body).expect("json");
    let tag = tag.map_or_else(|| cluster.keys().sign_body(&bytes), str::to_string);
    let agent = client(Duration::from_secs(2), limit);
    let mut resp = agent
        .post(&cluster.url(via, "/admin/member"))
        .header(raftlb::auth::AUTH_HEADER, &tag)
        .send(&bytes[..])?;
    let code = resp.status().as_u16();
    Ok((code, resp.body_mut().read_to_string().unwrap_or_default()))
}

/// The configuration node i reports in `/status`: (name, voter), in its order.
pub fn configuration(cluster: &Cluster, i: usize) -> Option<Vec<(String, bool)>> {
    let status = cluster.status(i)?;
    Some(status.nodes.into_iter().map(|n| (n.id, n.voter)).collect())
}

/// One shared HTTP client for the tests: short timeouts, statuses as values.
fn agent() -> &'static ureq::Agent {
    static AGENT: std::sync::OnceLock<ureq::Agent> = std::sync::OnceLock::new();
    AGENT.get_or_init(|| client(Duration::from_millis(500), Duration::from_secs(10)))
}

/// An HTTP client for the tests: a connect limit, a limit on the whole call,
/// and statuses as values rather than errors.
pub fn client(connect: Duration, call: Duration) -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_connect(Some(connect))
            .timeout_global(Some(call))
            .http_status_as_error(false)
            .build(),
    )
}

/// GET: (status, body, X-Raftlb-Server), or None when the node did not answer.
pub fn get(url: &str) -> Option<(u16, String, Option<String>)> {
    let mut resp = agent().get(url).call().ok()?;
    let server = resp
        .headers()
        .get("X-Raftlb-Server")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let code = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().ok()?;
    Some((code, body, server))
}

/// A request with any method and body: (status, body).
pub fn send(method: &str, url: &str, body: &[u8]) -> Option<(u16, String)> {
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .body(body.to_vec())
        .ok()?;
    run(request).map(|a| (a.code, a.body))
}

/// `POST url` with extra headers; None when the node did not answer.
pub fn post_with(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Option<Answer> {
    let mut request = ureq::http::Request::builder().method("POST").uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    run(request.body(body.to_vec()).ok()?)
}

/// An answer with its headers, for tests that look at them.
#[derive(Debug)]
pub struct Answer {
    pub code: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A request with any method, content type and body; None when the node did
/// not answer.
pub fn request(method: &str, url: &str, content_type: &str, body: &[u8]) -> Option<Answer> {
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", content_type)
        .body(body.to_vec())
        .ok()?;
    run(request)
}

/// Sends `request` with the shared agent; None when the node did not answer.
fn run(request: ureq::http::Request<Vec<u8>>) -> Option<Answer> {
    let mut resp = agent().run(request).ok()?;
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let code = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().ok()?;
    Some(Answer {
        code,
        body,
        headers,
    })
}

/// Runs a system tool (`ip`, `nft`, ...) to its end with `input` on its stdin,
/// and returns its stdout; the error is one line: the command and its stderr.
/// The chaos run's and the hosts' network faults both go through it.
pub fn run_tool(program: &Path, args: &[&str], input: &str) -> Result<String, String> {
    use std::io::Write;
    let command = format!("{} {}", program.display(), args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{command}: {e}"))?;
    let mut stdin = child.stdin.take().expect("stdin was piped");
    // A tool that exits before reading all of it fails below with its stderr.
    let written = stdin.write_all(input.as_bytes());
    drop(stdin);
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{command}: {e}"))?;
    if out.status.success() {
        written.map_err(|e| format!("{command}: writing its input: {e}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let input = input.trim();
        let input = if input.is_empty() {
            String::new()
        } else {
            format!(" (input: {input})")
        };
        Err(format!(
            "{command}: {}{input}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A request a [`FakeHttp`] got.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Path and query as sent.
    pub url: String,
    pub body: Vec<u8>,
    /// Its `X-Raftlb-Auth` header.
    pub auth: Option<String>,
}

/// A `raftlb::http` server on 127.0.0.1:0 standing in for a node or a worker:
/// it answers every request with its status (switchable) and body (with
/// `only_path`, every other path gets 404), and records what it was asked.
/// Stopped when dropped.
pub struct FakeHttp {
    pub addr: std::net::SocketAddr,
    answer: std::sync::Arc<FakeAnswer>,
    _serving: raftlb::http::Serving,
}

struct FakeAnswer {
    status: std::sync::atomic::AtomicU16,
    body: String,
    only_path: Option<String>,
    requests: Mutex<Vec<Recorded>>,
}

impl raftlb::http::Service for FakeAnswer {
    /// Reports and commands are at most 4 KiB.
    fn body_limit(&self, _method: &str, _path: &str) -> usize {
        4096
    }

    fn handle(&self, request: &raftlb::http::Request) -> raftlb::http::Reply {
        let other = (self.only_path.as_ref()).is_some_and(|only| only != request.path());
        let status = if other {
            404
        } else {
            self.status.load(std::sync::atomic::Ordering::SeqCst)
        };
        lock(&self.requests).push(Recorded {
            url: request.url().to_string(),
            body: request.body().to_vec(),
            auth: request
                .header(raftlb::auth::AUTH_HEADER)
                .map(str::to_string),
        });
        raftlb::http::text(status, self.body.clone())
    }
}

impl FakeHttp {
    /// Answers every request `status` with `body`.
    pub fn start(status: u16, body: &str) -> FakeHttp {
        FakeHttp::serve(status, body, None)
    }

    /// A worker whose only healthy path is `path` (200 `ok`; others 404).
    pub fn healthy_at(path: &str) -> FakeHttp {
        FakeHttp::serve(200, "ok", Some(path.to_string()))
    }

    fn serve(status: u16, body: &str, only_path: Option<String>) -> FakeHttp {
        let listener = raftlb::http::bind("127.0.0.1:0").expect("bind loopback port 0");
        let addr = listener.local_addr();
        let answer = std::sync::Arc::new(FakeAnswer {
            status: std::sync::atomic::AtomicU16::new(status),
            body: body.to_string(),
            only_path,
            requests: Mutex::new(Vec::new()),
        });
        let limits = raftlb::http::Limits::default();
        let serving = raftlb::http::serve(listener, limits, std::sync::Arc::clone(&answer));
        FakeHttp {
            addr,
            answer,
            _serving: serving,
        }
    }

    /// From now on, answers `status`.
    pub fn set_status(&self, status: u16) {
        (self.answer.status).store(status, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.answer.requests).clone()
    }

    /// The path and query of every request so far.
    pub fn paths(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.url).collect()
    }

    pub fn count(&self) -> usize {
        lock(&self.answer.requests).len()
    }
}

/// Test locks: a test that panicked holding one has failed already.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
