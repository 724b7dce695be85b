//! The running system, end to end: five raftlb-node processes, three workers
//! and their daemons on free loopback ports, killed with SIGKILL and restarted
//! from their data dirs. Each test proves one thing the simulator cannot: that
//! the real processes, sockets, disk and HTTP do what SPEC.md says.

mod support;

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use support::{exclusive, get, send, wait_for, Cluster, Options};

const SETTLE: Duration = Duration::from_secs(20);

fn started(options: Options) -> Cluster {
    let cluster = Cluster::start(options);
    cluster.wait_for_leader(SETTLE);
    let all_alive = vec![true; cluster.options.workers];
    cluster.wait_for_servers(&all_alive, SETTLE);
    cluster
}

#[test]
fn every_node_answers_primes_from_live_servers_after_electing_a_leader() {
    let _one = exclusive();
    let cluster = started(Options::default());
    let servers: BTreeSet<String> = (0..3).map(Cluster::server_id).collect();
    for i in 0..5 {
        for (path, want) in [
            ("/10000", "104729"),
            ("/prime/1000000", "15485863"),
            ("/1", "2"),
        ] {
            let (code, body, server) = get(&cluster.url(i, path)).expect("node answers");
            assert_eq!((code, body.as_str()), (200, want), "node {i} {path}");
            let server = server.expect("X-Raftlb-Server header");
            assert!(servers.contains(&server), "unknown server {server}");
        }
        let status = cluster.status(i).expect("status");
        assert_eq!(status.nodes.len(), 5);
        // The configuration in force, from the log: five voters, no learner.
        let (_, raw, _) = get(&cluster.url(i, "/status")).expect("node answers");
        assert_eq!(raw.matches("\"voter\":true").count(), 5, "{raw}");
        assert!(status.servers.iter().all(|s| s.alive && s.cpu <= 100.0));
    }
}

#[test]
fn a_killed_worker_is_marked_dead_everywhere_never_chosen_and_comes_back() {
    let _one = exclusive();
    let mut cluster = started(Options::default());
    let victim = 1;
    cluster.kill_worker(victim);
    cluster.wait_for_servers(&[true, false, true], SETTLE);
    for i in 0..60 {
        let node = i % 5;
        let (code, _, server) =
            get(&cluster.url(node, &format!("/{}", 1000 + i))).expect("answers");
        assert_eq!(code, 200);
        assert_ne!(
            server.as_deref(),
            Some("server-2"),
            "a dead server was chosen"
        );
    }
    // The daemon keeps running and resumes once the worker answers again.
    cluster.restart_worker(victim);
    cluster.wait_for_servers(&[true, true, true], SETTLE);
}

#[test]
fn prime_requests_have_zero_failures_across_a_sigkill_of_the_leader() {
    let _one = exclusive();
    let mut cluster = started(Options::default());
    let leader = cluster.wait_for_leader(SETTLE);
    let nodes_file = cluster.nodes_file();
    // The client goes through the nodes in nodes.txt order: put the leader first,
    // so that every request after the kill needs failover.
    let mut order: Vec<usize> = vec![leader];
    order.extend((0..5).filter(|i| *i != leader));
    let text: String = order
        .iter()
        .map(|i| format!("{} 127.0.0.1:{}\n", cluster.ids[*i], cluster.ports[*i]))
        .collect();
    let client_nodes = cluster.path("client-nodes.txt");
    std::fs::write(&client_nodes, text).expect("write");
    let client = |n: u64| {
        std::process::Command::new(support::CLIENT)
            .args([
                "--nodes",
                client_nodes.to_str().expect("utf-8 path"),
                "prime",
                &n.to_string(),
            ])
            .output()
            .expect("run the client")
    };
    let mut failures = Vec::new();
    let mut killed_at = None;
    let start = Instant::now();
    let mut count = 0;
    while start.elapsed() < Duration::from_secs(4) && count < 2000 {
        if killed_at.is_none() && start.elapsed() > Duration::from_secs(1) {
            cluster.kill_node(leader);
            killed_at = Some(Instant::now());
        }
        let out = client(10_000);
        count += 1;
        if !out.status.success() || String::from_utf8_lossy(&out.stdout) != "104729\n" {
            failures.push(String::from_utf8_lossy(&out.stderr).to_string());
        }
    }
    assert!(killed_at.is_some());
    assert!(
        failures.is_empty(),
        "{} of {count} failed: {:?}",
        failures.len(),
        failures.first()
    );
    let new_leader = cluster.wait_for_leader(SETTLE);
    assert_ne!(new_leader, leader);
    let _ = nodes_file;
}

#[test]
fn a_node_restarted_from_its_data_dir_catches_up() {
    let _one = exclusive();
    let mut cluster = started(Options::default());
    let leader = cluster.wait_for_leader(SETTLE);
    let victim = (leader + 1) % 5;
    cluster.kill_node(victim);
    // Reports keep committing while it is down (10 per second per server).
    let before = cluster.status(leader).expect("leader answers").commit_index;
    wait_for("commits while the node is down", SETTLE, || {
        let now = cluster.status(leader)?.commit_index;
        (now >= before + 20).then_some(())
    });
    cluster.restart_node(victim);
    wait_for("the restarted node to catch up", SETTLE, || {
        let mine = cluster.status(victim)?;
        let theirs = cluster.status(leader)?;
        let same_table = mine
            .servers
            .iter()
            .map(|s| &s.id)
            .eq(theirs.servers.iter().map(|s| &s.id));
        (mine.applied_index + 5 >= theirs.commit_index
            && mine.applied_index > before
            && same_table
            && mine.leader == theirs.leader)
            .then_some(())
    });
}

#[test]
fn reports_still_commit_with_two_nodes_down() {
    let _one = exclusive();
    let mut cluster = started(Options::default());
    let leader = cluster.wait_for_leader(SETTLE);
    // Take the leader and one follower down: the three left must elect and commit.
    cluster.kill_node(leader);
    cluster.kill_node((leader + 1) % 5);
    let new_leader = cluster.wait_for_leader(SETTLE);
    for via in cluster.live() {
        let server = format!("probe-{via}");
        cluster.report_until_applied(via, &server, SETTLE);
    }
    assert!(cluster.live().contains(&new_leader));
}

#[test]
fn bad_inputs_get_their_4xx_and_garbage_datagrams_are_counted_not_fatal() {
    let _one = exclusive();
    let mut cluster = started(Options {
        workers: 1,
        ..Options::default()
    });
    let leader = cluster.wait_for_leader(SETTLE);
    let target = (leader + 1) % 5;
    let port = cluster.ports[target];
    let url = move |p: &str| format!("http://127.0.0.1:{port}{p}");
    for bad in [
        "/0",
        "/-1",
        "/abc",
        "/1e3",
        "/12x",
        "/prime/",
        "/123456789012345678901",
        "/10000000001",
        "/%31",
    ] {
        let (code, body, _) = get(&url(bad)).expect("answers");
        assert_eq!(code, 400, "{bad}: {body}");
        assert_eq!(
            body.trim_end().lines().count(),
            1,
            "{bad}: one line: {body:?}"
        );
    }
    for missing in ["/a/b", "/prime/5/6/x/"] {
        let (code, ..) = get(&url(missing)).expect("answers");
        assert!(code == 404 || code == 400, "{missing}: {code}");
    }
    assert_eq!(get(&url("/nope/x")).expect("answers").0, 404);
    assert_eq!(
        send("DELETE", &url("/status"), b"").expect("answers").0,
        405
    );
    let reports: [(&[u8], u16); 6] = [
        (b"not json", 400),
        (
            br#"{"server":"x","url":"http://h:1","cpu":500,"seq":1}"#,
            400,
        ),
        (
            br#"{"server":"x","url":"javascript:1","cpu":5,"seq":1}"#,
            400,
        ),
        (br#"{"server":"x","cpu":5,"seq":1}"#, 400),
        (&[b'{'; 5000], 413),
        (
            br#"{"server":"x","url":"http://127.0.0.1:9","cpu":5,"seq":1}"#,
            202,
        ),
    ];
    for (body, want) in reports {
        let answer = cluster.post_report(target, body).expect("answers");
        let (code, reason) = (answer.code, answer.body);
        assert_eq!(
            code,
            want,
            "{}: {reason}",
            String::from_utf8_lossy(&body[..body.len().min(40)])
        );
    }
    // Garbage from outside nodes.txt, and from a node's own address (the
    // victim is killed first so that its port is free to send from).
    let outsider = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let victim = (target + 1) % 5;
    let victim = if victim == leader {
        (victim + 1) % 5
    } else {
        victim
    };
    cluster.kill_node(victim);
    let insider =
        UdpSocket::bind(("127.0.0.1", cluster.ports[victim])).expect("bind the dead node's port");
    let mut seed = 0x9e3779b97f4a7c15u64;
    for k in 0..500u64 {
        let len = (k % 200) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let to = ("127.0.0.1", cluster.ports[target]);
        outsider.send_to(&bytes, to).expect("send");
        insider.send_to(&bytes, to).expect("send");
        if k % 50 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    wait_for("garbage datagrams counted", SETTLE, || {
        let (_, metrics, _) = get(&url("/metrics"))?;
        let value = |name: &str| -> Option<u64> {
            metrics
                .lines()
                .find(|l| l.starts_with(name))?
                .rsplit(' ')
                .next()?
                .parse()
                .ok()
        };
        let unknown = value("raftlb_datagrams_dropped_by_reason_total{reason=\"unknown_source\"}")?;
        // Garbage from a node's address carries no valid tag: never decoded.
        let auth = value("raftlb_datagrams_dropped_by_reason_total{reason=\"auth\"}")?;
        let total = value("raftlb_datagrams_dropped_total ")?;
        (unknown > 0 && auth > 0 && total >= unknown + auth).then_some(())
    });
    drop(insider);
    // The cluster keeps working: a leader, primes, commits.
    cluster.wait_for_leader(SETTLE);
    let (code, body, _) = get(&url("/10000")).expect("answers");
    assert_eq!((code, body.as_str()), (200, "104729"));
    cluster.report_until_applied(target, "after-garbage", SETTLE);
}

#[test]
fn a_burst_of_30_slow_requests_spreads_over_all_servers() {
    let _one = exclusive();
    let cluster = started(Options {
        // Reports slower than the burst, so that only the node's own in-flight
        // accounting can spread it.
        report_interval_ms: 1000,
        dead_after_ms: 5000,
        ..Options::default()
    });
    let url_base = cluster.url(0, "");
    let handles: Vec<_> = (0..30u64)
        .map(|k| {
            let url = format!("{url_base}/{}", 400_000_000 + k * 7919);
            std::thread::spawn(move || get(&url))
        })
        .collect();
    let mut used = BTreeSet::new();
    for h in handles {
        let (code, _, server) = h.join().expect("thread").expect("answered");
        assert_eq!(code, 200);
        used.insert(server.expect("header"));
    }
    assert_eq!(used.len(), 3, "the burst reached only {used:?}");
}

#[test]
fn sigterm_hands_leadership_over_and_exits_0() {
    let _one = exclusive();
    let mut cluster = started(Options {
        workers: 1,
        ..Options::default()
    });
    let leader = cluster.wait_for_leader(SETTLE);
    let mut proc = cluster.nodes[leader].take().expect("running");
    proc.signal("TERM");
    let code = proc.wait_exit(Duration::from_secs(5));
    assert_eq!(code, Some(0));
    let new_leader = cluster.wait_for_leader(SETTLE);
    assert_ne!(new_leader, leader);
    let log = cluster.logs();
    assert!(log.contains("handing leadership to"), "no handover logged");
}

#[test]
fn bad_nodes_files_and_unknown_ids_exit_2_naming_the_problem() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        (
            "A 127.0.0.1:1\nA 127.0.0.1:2\n",
            "A",
            "line 2: duplicate id A",
        ),
        ("A 127.0.0.1:1\nB nonsense\n", "A", "line 2: bad address"),
        ("A 127.0.0.1:1\n", "Z", "node id \"Z\" is not in"),
    ];
    for (text, id, want) in cases {
        let path = dir.path().join("nodes.txt");
        std::fs::write(&path, text).expect("write");
        let out = std::process::Command::new(support::NODE)
            .args(["--id", id, "--nodes", path.to_str().expect("utf-8")])
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(want), "{err:?} should contain {want:?}");
    }
    let out = std::process::Command::new(support::NODE)
        .args([
            "--id",
            "A",
            "--election-ms-min",
            "500",
            "--election-ms-max",
            "400",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn an_address_this_host_cannot_bind_exits_2_saying_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Taken by someone else (UDP; the node binds UDP first), and not this
    // host's at all (TEST-NET-1: bind fails at once, nothing is sent).
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("a free port");
    let taken = taken.local_addr().expect("bound").to_string();
    for (addr, want) in [
        (taken.as_str(), "cannot bind udp"),
        ("192.0.2.1:34572", "cannot bind udp 192.0.2.1:34572"),
    ] {
        let nodes = dir.path().join("nodes.txt");
        std::fs::write(&nodes, format!("A {addr}\n")).expect("write nodes.txt");
        let out = std::process::Command::new(support::NODE)
            .args(["--id", "A", "--insecure", "--nodes"])
            .arg(&nodes)
            .arg("--data-dir")
            .arg(dir.path().join("data-A"))
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{addr}: {err}");
        assert!(err.contains(want), "{addr}: {err}");
    }
}

#[test]
fn a_data_dir_of_a_newer_format_is_refused_naming_both_and_left_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = support::free_port();
    let nodes = dir.path().join("nodes.txt");
    std::fs::write(&nodes, format!("A 127.0.0.1:{port}\n")).expect("write nodes.txt");
    let data = dir.path().join("data-A");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::write(data.join("format"), "raftlb data dir format 9\n").expect("write");
    let out = std::process::Command::new(support::NODE)
        .args(["--id", "A", "--insecure", "--nodes"])
        .arg(&nodes)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("format 9") && err.contains("format 2"),
        "{err}"
    );
    let mut left: Vec<String> = std::fs::read_dir(&data)
        .expect("the data dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name != "LOCK")
        .collect();
    left.sort();
    assert_eq!(left, ["format"], "nothing written beside it");
}

#[test]
fn a_second_node_on_the_same_data_dir_is_refused() {
    let _one = exclusive();
    let cluster = Cluster::start(Options {
        nodes: 1,
        workers: 0,
        ..Options::default()
    });
    cluster.wait_for_leader(SETTLE);
    let out = std::process::Command::new(support::NODE)
        .args([
            "--id",
            "A",
            "--nodes",
            &cluster.nodes_file(),
            "--data-dir",
            cluster.path("data-A").to_str().expect("utf-8"),
        ])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("in use by another running raftlb-node"),
        "{err}"
    );
}

#[test]
fn a_paused_leader_is_replaced_and_steps_down_when_it_wakes() {
    let _one = exclusive();
    let cluster = started(Options {
        workers: 1,
        ..Options::default()
    });
    let leader = cluster.wait_for_leader(SETTLE);
    let paused = cluster.nodes[leader].as_ref().expect("running");
    paused.signal("STOP");
    let others: Vec<usize> = (0..5).filter(|i| *i != leader).collect();
    let new_leader = wait_for("a new leader among the others", SETTLE, || {
        let s = cluster.status(others[0])?;
        let l = cluster
            .ids
            .iter()
            .position(|id| Some(id) == s.leader.as_ref())?;
        (l != leader).then_some(l)
    });
    paused.signal("CONT");
    wait_for("the old leader to follow the new one", SETTLE, || {
        let s = cluster.status(leader)?;
        (s.role == "follower" && s.leader.as_ref() == Some(&cluster.ids[new_leader])).then_some(())
    });
}

#[test]
fn a_cluster_killed_whole_and_restarted_keeps_every_committed_entry() {
    let _one = exclusive();
    let mut cluster = started(Options::default());
    // No more reports, so that the commit index stands still.
    for daemon in &mut cluster.daemons {
        drop(daemon.take());
    }
    let leader = cluster.wait_for_leader(SETTLE);
    let before = wait_for("every node to apply all that is committed", SETTLE, || {
        let commit = cluster.status(leader)?.commit_index;
        let all = (0..5).all(|i| cluster.status(i).is_some_and(|s| s.applied_index == commit));
        all.then_some(commit)
    });
    let servers = cluster.status(leader).expect("answers").servers;
    assert_eq!(servers.len(), 3);
    for i in 0..5 {
        cluster.kill_node(i);
    }
    for i in 0..5 {
        cluster.restart_node(i);
    }
    let leader = cluster.wait_for_leader(SETTLE);
    wait_for(
        "the restarted cluster to apply what it had committed",
        SETTLE,
        || {
            let s = cluster.status(leader)?;
            (s.applied_index >= before).then_some(())
        },
    );
    let after = cluster.status(leader).expect("answers");
    let ids =
        |v: &[raftlb::status::ServerStatus]| v.iter().map(|s| s.id.clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(&after.servers),
        ids(&servers),
        "the load table came back"
    );
}

/// The GLIBC_TUNABLES of a one-node cluster's node started with `tunables`, read
/// once it answers HTTP (it executes itself again before it binds, see
/// `runtime::thread_cache`).
fn glibc_tunables_of_node(tunables: Option<&str>) -> Option<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = support::free_port();
    let nodes = dir.path().join("nodes.txt");
    std::fs::write(&nodes, format!("A 127.0.0.1:{port}\n")).expect("write nodes.txt");
    let mut command = std::process::Command::new(support::NODE);
    command
        .args([
            "--id",
            "A",
            "--insecure",
            "--nodes",
            nodes.to_str().expect("utf-8"),
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .env_remove("GLIBC_TUNABLES");
    if let Some(tunables) = tunables {
        command.env("GLIBC_TUNABLES", tunables);
    }
    let child = command.spawn().expect("start raftlb-node");
    let node = support::Proc {
        name: "node A".into(),
        child,
    };
    let url = format!("http://127.0.0.1:{port}/status");
    wait_for("the node to answer /status", SETTLE, || get(&url));
    // Executed again under its own name, so that ps, pgrep and killall find it.
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", node.pid())).expect("comm");
    assert_eq!(comm.trim(), "raftlb-node");
    let environ = std::fs::read(format!("/proc/{}/environ", node.pid())).expect("environ");
    environ
        .split(|&b| b == 0)
        .find_map(|var| var.strip_prefix(b"GLIBC_TUNABLES="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Each of a node's ~200 threads would keep ~30 KiB of freed blocks in glibc's
/// tcache (a leader's RSS after a million note writes: 20 MiB with, 10 MiB
/// without); a user's own setting wins.
#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn a_node_runs_without_glibc_thread_caches_unless_told_otherwise() {
    let _one = exclusive();
    assert_eq!(
        glibc_tunables_of_node(None).as_deref(),
        Some("glibc.malloc.tcache_count=0")
    );
    assert_eq!(
        glibc_tunables_of_node(Some("glibc.malloc.tcache_count=7")).as_deref(),
        Some("glibc.malloc.tcache_count=7")
    );
}
