//! What a new user meets, run as a user would (issue 16): the real binaries,
//! `make` and `scripts/cluster.sh`, on free loopback ports.
//!
//! - `raftlb status` ends with the leader line, and with three of five nodes
//!   down with the `NO LEADER` line and exit 1; a note write then fails in
//!   about 3 s, not 3 s per live node; `prime -v` names the node and the
//!   server; `/metrics` lists a server before it got any traffic.
//! - the client run from a directory without nodes.txt finds the nodes in
//!   `RAFTLB_NODES` (a file, or a comma list), and without any names all three
//!   places it looked.
//! - `make help` (and a bare `make`) lists every target of the Makefile.
//! - `scripts/cluster.sh start` (what `make cluster` runs after its build) names
//!   the leader and the page once every server is alive, and says which server
//!   did not come up, with its logs' end. It runs on free ports with its own
//!   run and data dirs (BIN, NODES, RUN, DATA, WORKER_PORTS), so it never meets
//!   a demo cluster on 34572-34576 and 13337-13339.
//!
//! Every wait is bounded; every process is killed when its test ends.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::{Cluster, Options};

const NO_LEADER_2_OF_5: &str = "NO LEADER: 2 of 5 nodes up, a majority is 3; \
    writes and linearizable reads will fail until one more is back";

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `raftlb ARGS` in `dir`, with RAFTLB_NODES set to `env` (or unset).
fn raftlb_in(dir: &Path, env: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(support::CLIENT);
    command.current_dir(dir).args(args);
    match env {
        Some(value) => command.env("RAFTLB_NODES", value),
        None => command.env_remove("RAFTLB_NODES"),
    };
    command.output().expect("run raftlb")
}

fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or("")
}

#[test]
fn status_says_who_leads_and_no_leader_with_three_of_five_down_exits_1() {
    let _one = support::exclusive();
    let mut cluster = Cluster::start(Options {
        workers: 1,
        ..Options::default()
    });
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    cluster.wait_for_servers(&[true], Duration::from_secs(10));
    let nodes = cluster.nodes_file();
    let elsewhere = tempfile::tempdir().expect("a dir without nodes.txt");

    // A server that got no traffic yet has its series, at 0.
    let (_, metrics, _) = support::get(&cluster.url(leader, "/metrics")).expect("/metrics");
    let zero = format!(
        "raftlb_forwards_total{{server=\"{}\",result=\"ok\"}} 0",
        Cluster::server_id(0)
    );
    assert!(metrics.contains(&zero), "{metrics}");
    // The page, rendered on the server: the server's row, alive.
    let (_, page, _) = support::get(&cluster.url(leader, "/")).expect("the page");
    let row = format!(
        "<tr class=\"rendered\"><th scope=\"row\">{}<span class=\"url addr\">http://127.0.0.1:",
        Cluster::server_id(0)
    );
    assert!(page.contains(&row), "{page}");
    assert!(page.contains("data-label=\"State\">alive</td>"), "{page}");
    assert!(page.contains("<tr id=\"no-servers\" hidden>"), "{page}");

    // From another directory, the nodes from RAFTLB_NODES, a file and a list.
    let list: Vec<String> = (cluster.ids.iter().zip(&cluster.ports))
        .map(|(id, port)| format!("{id}=127.0.0.1:{port}"))
        .collect();
    let list = list.join(",");
    let want = format!("leader {}, term ", cluster.ids[leader]);
    for env in [nodes.as_str(), list.as_str()] {
        let output = raftlb_in(elsewhere.path(), Some(env), &["status"]);
        let out = stdout(&output);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{env}: {out}{}",
            stderr(&output)
        );
        assert!(
            out.lines().next().is_some_and(|l| l.ends_with("ERROR")),
            "{out}"
        );
        let last = last_line(&out);
        assert!(
            last.starts_with(&want) && last.ends_with(", 5 of 5 nodes up"),
            "{out}"
        );
    }

    // prime -v: the digits alone on stdout, who answered on stderr.
    let output = raftlb_in(elsewhere.path(), Some(&list), &["prime", "10000", "-v"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "104729\n");
    let said = stderr(&output);
    let node_a = format!("node A (127.0.0.1:{}) answered in ", cluster.ports[0]);
    assert!(said.starts_with(&node_a), "{said}");
    let server = format!("ms; server {} computed it\n", Cluster::server_id(0));
    assert!(said.ends_with(&server), "{said}");
    // Node A's /metrics times that forward in its server's histogram.
    let (_, metrics, _) = support::get(&cluster.url(0, "/metrics")).expect("/metrics");
    let count = format!(
        "raftlb_forward_seconds_count{{server=\"{}\"}} 1",
        Cluster::server_id(0)
    );
    assert!(metrics.contains(&count), "{metrics}");
    let score = format!(
        "raftlb_policy_score{{server=\"{}\"}} ",
        Cluster::server_id(0)
    );
    assert!(metrics.contains(&score), "{metrics}");

    // Three down (the leader among them): the survivors elect no one.
    let survivors: Vec<usize> = (0..5).filter(|i| *i != leader).take(2).collect();
    for i in (0..5).filter(|i| !survivors.contains(i)) {
        cluster.kill_node(i);
    }
    let output = support::wait_for("status to say NO LEADER", Duration::from_secs(10), || {
        let output = raftlb_in(elsewhere.path(), Some(&nodes), &["status"]);
        (output.status.code() == Some(1)).then_some(output)
    });
    let out = stdout(&output);
    assert_eq!(last_line(&out), NO_LEADER_2_OF_5, "{out}");
    assert_eq!(
        out.lines().filter(|l| l.contains(" down ")).count(),
        3,
        "{out}"
    );
    assert!(
        out.contains("connection refused"),
        "the ERROR column says why: {out}"
    );

    // A write with no quorum fails once, in about the node's 3 s deadline.
    let started = Instant::now();
    let output = raftlb_in(elsewhere.path(), Some(&nodes), &["note", "set", "hello"]);
    let took = started.elapsed();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("(503)"), "{}", stderr(&output));
    assert!(
        took < Duration::from_millis(5_500),
        "3 s per live node would be 6 s: took {took:?}"
    );
    let started = Instant::now();
    let output = raftlb_in(elsewhere.path(), Some(&nodes), &["note", "get"]);
    let took = started.elapsed();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        took < Duration::from_millis(5_500),
        "asked at once: took {took:?}"
    );
}

#[test]
fn a_client_without_nodes_names_the_flag_the_variable_and_nodes_txt() {
    let elsewhere = tempfile::tempdir().expect("a dir without nodes.txt");
    let output = raftlb_in(elsewhere.path(), None, &["prime", "5"]);
    assert_eq!(output.status.code(), Some(2));
    let said = stderr(&output);
    for source in ["--nodes FILE", "RAFTLB_NODES", "./nodes.txt"] {
        assert!(said.contains(source), "{source} named: {said}");
    }
    assert_eq!(said.lines().count(), 1, "{said}");
    let output = raftlb_in(elsewhere.path(), Some("A=127.0.0.1:1,B"), &["status"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output),
        "raftlb: RAFTLB_NODES: \"B\" is not ID=HOST:PORT\n"
    );
    // The flag wins over the variable.
    let output = raftlb_in(
        elsewhere.path(),
        Some("A=127.0.0.1:1"),
        &["--nodes", "/nonexistent/nodes.txt", "status"],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).starts_with("raftlb: cannot read /nonexistent/nodes.txt"));
}

#[test]
fn help_texts_name_their_own_program_default_and_range() {
    let elsewhere = tempfile::tempdir().expect("a dir");
    let run = |program: &str, args: &[&str]| {
        Command::new(program)
            .current_dir(elsewhere.path())
            .args(args)
            .output()
            .expect("run")
    };
    for (program, name) in [
        (support::CLIENT, "raftlb"),
        (support::NODE, "raftlb-node"),
        (support::DAEMON, "raftlb-daemon"),
        (support::WORKER, "raftlb-worker"),
    ] {
        let out = stdout(&run(program, &["-V"]));
        assert!(out.starts_with(&format!("{name} ")), "{out}");
    }
    let help = run(support::CLIENT, &["help", "--help"]);
    assert_eq!(help.status.code(), Some(0), "{}", stderr(&help));
    for (command, default) in [
        ("prime", "[default: 30000]"),
        ("status", "[default: 2000]"),
        ("note", "[default: 5000]"),
    ] {
        let out = stdout(&run(support::CLIENT, &[command, "--help"]));
        let line = out
            .lines()
            .find(|l| l.contains("--timeout-ms"))
            .expect("--timeout-ms");
        assert!(line.ends_with(default), "{command}: {line}");
    }
    let set = stdout(&run(support::CLIENT, &["note", "set", "--help"]));
    assert!(set.contains("<TEXT>  The new note"), "{set}");
    let bench = run(
        support::CLIENT,
        &["bench", "prime", "--target", "x", "--n", "0"],
    );
    assert!(
        stderr(&bench).contains("1..=10000000000"),
        "{}",
        stderr(&bench)
    );
    // The client and a node word a bad N alike.
    let client = stderr(&run(support::CLIENT, &["prime", "12x"]));
    assert!(
        client.contains("N must be a whole number from 1 to ")
            && client.ends_with(", got \"12x\"\n"),
        "{client}"
    );
    assert_eq!(
        raftlb::primes::parse_n("12x", 10).map_err(|e| e.to_string()),
        Err("N must be a whole number from 1 to 10, got \"12x\"".into())
    );
}

/// The checkout: where the Makefile and scripts/ are.
fn checkout() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn make_help_lists_every_target_and_is_what_a_bare_make_prints() {
    let makefile = std::fs::read_to_string(checkout().join("Makefile")).expect("Makefile");
    let targets: Vec<&str> = makefile
        .lines()
        .filter_map(|l| l.split_once(':').map(|(t, _)| t))
        .filter(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .collect();
    assert!(targets.len() >= 15, "{targets:?}");
    let make = |args: &[&str]| {
        let output = Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(checkout())
            .args(args)
            .output()
            .expect("run make");
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        stdout(&output)
    };
    let help = make(&["help"]);
    for target in &targets {
        let line = help
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(target))
            .unwrap_or_else(|| panic!("make {target} listed: {help}"));
        assert!(line.split_whitespace().count() > 3, "described: {line}");
    }
    assert_eq!(help.lines().count(), targets.len(), "{help}");
    assert_eq!(make(&[]), help, "a bare make prints the help");
}

/// `scripts/cluster.sh` on free ports with its own dirs; `stop` on drop.
struct ScriptCluster {
    dir: tempfile::TempDir,
    ids: Vec<String>,
    ports: Vec<u16>,
    worker_ports: Vec<u16>,
}

impl ScriptCluster {
    fn new() -> ScriptCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ids: Vec<String> = ["A", "B", "C", "D", "E"].map(String::from).to_vec();
        let ports: Vec<u16> = ids.iter().map(|_| support::free_port()).collect();
        let text: String = (ids.iter().zip(&ports))
            .map(|(id, port)| format!("{id} 127.0.0.1:{port}\n"))
            .collect();
        std::fs::write(dir.path().join("nodes.txt"), text).expect("nodes.txt");
        let worker_ports = (0..3).map(|_| support::free_port()).collect();
        ScriptCluster {
            dir,
            ids,
            ports,
            worker_ports,
        }
    }

    fn run(&self, command: &str, wait_secs: u64) -> Output {
        let bin = Path::new(support::NODE)
            .parent()
            .expect("the binaries' dir");
        let ports: Vec<String> = self.worker_ports.iter().map(u16::to_string).collect();
        Command::new(checkout().join("scripts/cluster.sh"))
            .arg(command)
            .env("BIN", bin)
            .env("NODES", self.dir.path().join("nodes.txt"))
            .env("RUN", self.dir.path().join("run"))
            .env("DATA", self.dir.path().join("data"))
            .env("WORKER_PORTS", ports.join(" "))
            .env("WAIT_SECS", wait_secs.to_string())
            .output()
            .expect("run scripts/cluster.sh")
    }

    fn pid(&self, name: &str) -> u32 {
        let file = self.dir.path().join("run").join(format!("{name}.pid"));
        let text = std::fs::read_to_string(&file).expect("a pid file");
        text.trim().parse().expect("a pid")
    }
}

impl Drop for ScriptCluster {
    fn drop(&mut self) {
        // A paused daemon would sit out its SIGTERM: continue it first.
        if let Ok(text) = std::fs::read_to_string(self.dir.path().join("run/daemon-1.pid")) {
            if let Ok(pid) = text.trim().parse::<libc::pid_t>() {
                // SAFETY: kill(2) with plain integers; a gone pid is harmless.
                unsafe { libc::kill(pid, libc::SIGCONT) };
            }
        }
        // TERM, then KILL after 5 s, by the pid files.
        let _ = self.run("stop", 0);
    }
}

#[test]
fn cluster_script_names_the_leader_once_ready_and_what_did_not_come_up() {
    let _one = support::exclusive();
    let cluster = ScriptCluster::new();
    let output = cluster.run("start", 10);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{out}{}", stderr(&output));
    let line = out
        .lines()
        .find(|l| l.starts_with("cluster up: leader "))
        .unwrap_or_else(|| panic!("the leader named: {out}"));
    let leader = line["cluster up: leader ".len()..]
        .split(',')
        .next()
        .expect("an id");
    let i = cluster
        .ids
        .iter()
        .position(|id| id == leader)
        .expect("a node id");
    let page = format!("http://127.0.0.1:{}/", cluster.ports[i]);
    assert!(out.contains(&page), "the page's URL: {out}");
    assert!(line.ends_with("3 servers alive."), "{line}");

    // server-1's daemon paused: once its server is dead, start says so.
    support::send_signal(cluster.pid("daemon-1"), "STOP");
    let status = || {
        let output = Command::new(support::CLIENT)
            .arg("--nodes")
            .arg(cluster.dir.path().join("nodes.txt"))
            .arg("status")
            .output()
            .expect("raftlb status");
        stdout(&output)
    };
    support::wait_for("server-1 dead", Duration::from_secs(10), || {
        let out = status();
        out.lines()
            .any(|l| l.starts_with("server-1 ") && l.split_whitespace().nth(4) == Some("no"))
            .then_some(())
    });
    let output = cluster.run("start", 1);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let said = stderr(&output);
    assert!(
        said.contains("after 1 s the cluster is not ready:"),
        "{said}"
    );
    assert!(
        said.contains("server-1 (worker-1, daemon-1) is not alive in the table"),
        "{said}"
    );
    assert!(
        !said.contains("server-2") && !said.contains("node-"),
        "{said}"
    );
    support::send_signal(cluster.pid("daemon-1"), "CONT");
}

#[test]
fn a_rolling_restart_restarts_every_node_leader_last_and_no_client_request_fails() {
    let _one = support::exclusive();
    let cluster = ScriptCluster::new();
    let output = cluster.run("start", 15);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let before: Vec<u32> = (cluster.ids.iter())
        .map(|id| cluster.pid(&format!("node-{id}")))
        .collect();
    let nodes = cluster.dir.path().join("nodes.txt");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A prime client and a note writer, each with the CLI's failover, for as
    // long as the restart lasts (bounded by a minute).
    let client = |writes: bool| {
        let (nodes, stop) = (nodes.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed, mut last) = (0u32, Vec::new(), String::new());
            let started = Instant::now();
            for i in 0u32.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed)
                    || started.elapsed() > Duration::from_secs(60)
                {
                    break;
                }
                let text = format!("write {i}");
                let n = (1000 + i).to_string();
                let args: Vec<&str> = if writes {
                    vec!["note", "set", &text]
                } else {
                    vec!["prime", &n]
                };
                let output = Command::new(support::CLIENT)
                    .arg("--nodes")
                    .arg(&nodes)
                    .args(&args)
                    .output()
                    .expect("run raftlb");
                if output.status.success() {
                    ok += 1;
                    last = text;
                } else {
                    failed.push(stderr(&output));
                }
            }
            (ok, failed, last)
        })
    };
    let primes = client(false);
    let writes = client(true);
    std::thread::sleep(Duration::from_millis(500));
    let output = cluster.run("rolling-restart", 10);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{out}{}", stderr(&output));
    let (prime_ok, prime_failed, _) = primes.join().expect("the prime client");
    let (write_ok, write_failed, last) = writes.join().expect("the note writer");
    println!("{out}primes: {prime_ok} ok, writes: {write_ok} ok");
    assert!(prime_failed.is_empty(), "failed primes: {prime_failed:?}");
    assert!(write_failed.is_empty(), "failed writes: {write_failed:?}");
    assert!(prime_ok > 0 && write_ok > 0);

    // Every node restarted, the leader last.
    let first = out
        .lines()
        .find_map(|l| l.strip_prefix("rolling restart, leader "))
        .expect("the order");
    let (leader, order) = first.split_once(" last: ").expect("leader, then order");
    assert_eq!(order.split(' ').next_back(), Some(leader), "{out}");
    for (id, pid) in cluster.ids.iter().zip(&before) {
        assert_ne!(
            cluster.pid(&format!("node-{id}")),
            *pid,
            "node {id} restarted"
        );
    }
    assert!(out.contains("rolling restart done: leader "), "{out}");
    // The last acknowledged write is the note.
    let output = Command::new(support::CLIENT)
        .arg("--nodes")
        .arg(&nodes)
        .args(["note", "get"])
        .output()
        .expect("note get");
    assert_eq!(stdout(&output).trim_end(), last);
}
