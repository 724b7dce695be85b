//! Process tests of `raftlb`, the client: the real binary against fake nodes
//! served by `raftlb::http` in this process on loopback port 0, plus addresses where
//! nothing listens (refused) or nothing answers (silent).
//!
//! They prove the failover order of `prime` (refused, 5xx and timeouts move on;
//! a 400 is final), its exit codes, and that `status` marks the leader, shows
//! the leader's servers, prints raw JSON with `--json`, and exits 1 when every
//! node is down. Every wait is bounded by the client's own timeouts.
//!
//! `raftlb bench` runs against a real worker and a real 3-node cluster: it
//! reports ok requests and no failure in its JSON, stops at `--max-requests`,
//! needs no nodes.txt, exits 2 on a bad target and 1 when nothing answers.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output};
use std::time::Duration;

use raftlb::status::{NodeStatus, ServerStatus, Status};
use support::FakeHttp;

/// A loopback address where nothing listens: bound, then released.
fn refusing_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// Runs `raftlb` with a nodes.txt listing `addrs` as A, B, C… in order.
fn raftlb(addrs: &[SocketAddr], args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nodes.txt");
    let text: String = addrs
        .iter()
        .zip('A'..)
        .map(|(addr, id)| format!("{id} {addr}\n"))
        .collect();
    std::fs::write(&path, text).expect("write nodes.txt");
    let output = Command::new(env!("CARGO_BIN_EXE_raftlb"))
        .arg("--nodes")
        .arg(&path)
        .args(args)
        .output()
        .expect("run raftlb");
    drop(dir);
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn prime_moves_past_a_refused_node_and_a_503_to_the_node_that_answers() {
    let unavailable = FakeHttp::start(503, "no live server\n");
    let good = FakeHttp::start(200, "104729");
    let output = raftlb(
        &[refusing_addr(), unavailable.addr, good.addr],
        &["prime", "10000"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "104729\n");
    assert_eq!(unavailable.paths(), ["/prime/10000"]);
    assert_eq!(good.paths(), ["/prime/10000"]);
}

#[test]
fn prime_moves_past_a_node_that_does_not_answer_in_time() {
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let good = FakeHttp::start(200, "2\n");
    let addrs = [silent.local_addr().expect("addr"), good.addr];
    let output = raftlb(&addrs, &["--timeout-ms", "300", "prime", "1"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "2\n");
}

#[test]
fn prime_exits_1_with_one_line_per_node_when_every_node_fails() {
    let unavailable = FakeHttp::start(503, "no live server\n");
    let broken = FakeHttp::start(200, "<html>not a prime</html>");
    let output = raftlb(
        &[refusing_addr(), unavailable.addr, broken.addr],
        &["prime", "3"],
    );
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output), "");
    let err = stderr(&output);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    assert!(
        lines[0].starts_with("raftlb: node A (") && lines[0].contains("refused"),
        "{err}"
    );
    assert!(
        lines[1].starts_with("raftlb: node B (")
            && lines[1].ends_with("answered 503: no live server"),
        "{err}"
    );
    assert!(
        lines[2].starts_with("raftlb: node C (") && lines[2].contains("without a number"),
        "{err}"
    );
    assert_eq!(lines[3], "raftlb: prime: every node failed");
}

#[test]
fn prime_takes_a_400_as_final_bad_usage() {
    let strict = FakeHttp::start(400, "bad N: above the maximum 10000000000\n");
    let good = FakeHttp::start(200, "104729");
    let output = raftlb(&[strict.addr, good.addr], &["prime", "99999999999"]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert_eq!(
        err,
        "raftlb: prime: node A refused the request (400): bad N: above the maximum 10000000000\n"
    );
    assert!(good.paths().is_empty(), "a 400 is not retried elsewhere");
}

#[test]
fn prime_refuses_a_malformed_n_without_asking_any_node() {
    let good = FakeHttp::start(200, "2");
    for n in ["0", "-1", "abc", "1e3", "12x", "", "123456789012345678901"] {
        let output = raftlb(&[good.addr], &["prime", n]);
        assert_eq!(output.status.code(), Some(2), "N {n:?}");
        let err = stderr(&output);
        assert!(
            err.starts_with("raftlb: N must be a whole number from 1 to ")
                && err.lines().count() == 1,
            "{err}"
        );
    }
    assert!(good.paths().is_empty());
}

fn status(id: &str, role: &str, leader: Option<&str>) -> String {
    let status = Status {
        id: id.into(),
        role: role.into(),
        term: 7,
        leader: leader.map(Into::into),
        commit_index: 1234,
        applied_index: 1234,
        insecure: false,
        nodes: vec![NodeStatus {
            id: id.into(),
            addr: "x:1".into(),
            reachable: Some(true),
            voter: true,
        }],
        servers: vec![
            ServerStatus {
                id: format!("{id}-w1"),
                url: "http://127.0.0.1:13337".into(),
                cpu: 42.25,
                wait: 3.5,
                alive: true,
                age_ms: 300,
            },
            ServerStatus {
                id: format!("{id}-w2"),
                url: "http://127.0.0.1:13338".into(),
                cpu: 0.0,
                wait: 0.0,
                alive: false,
                age_ms: 65_000,
            },
        ],
    };
    serde_json::to_string(&status).expect("status serializes")
}

#[test]
fn status_marks_the_leader_and_shows_its_servers() {
    let follower = FakeHttp::start(200, &status("B", "follower", Some("C")));
    let leader = FakeHttp::start(200, &status("C", "leader", Some("C")));
    let output = raftlb(&[refusing_addr(), follower.addr, leader.addr], &["status"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = stdout(&output);
    let lines: Vec<&str> = out.lines().collect();
    let words = |line: &str| {
        line.split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        words(lines[0]),
        ["ID", "ADDRESS", "STATE", "ROLE", "TERM", "LEADER", "COMMIT", "ERROR"]
    );
    let a = words(lines[1]);
    assert_eq!((a[0].as_str(), a[2].as_str()), ("A", "down"), "{out}");
    assert_eq!(words(lines[2])[2..], ["up", "follower", "7", "C", "1234"]);
    assert!(lines[3].starts_with('*'), "leader row marked: {out}");
    assert_eq!(words(lines[3])[3..], ["up", "leader", "7", "C", "1234"]);
    assert!(
        out.contains("servers, as node C (leader) sees them:"),
        "{out}"
    );
    let w1 = lines
        .iter()
        .find(|l| l.starts_with("C-w1"))
        .expect("leader's server row");
    assert_eq!(
        words(w1)[1..],
        ["http://127.0.0.1:13337", "42.2", "3.5", "yes", "300ms"]
    );
    let w2 = lines
        .iter()
        .find(|l| l.starts_with("C-w2"))
        .expect("leader's server row");
    assert_eq!(words(w2)[4..], ["no", "1m05s"]);
    assert!(!out.contains("B-w1"), "servers come from the leader: {out}");
}

#[test]
fn status_json_prints_the_first_answering_nodes_raw_status() {
    let body = status("B", "follower", Some("C"));
    let follower = FakeHttp::start(200, &body);
    let output = raftlb(&[refusing_addr(), follower.addr], &["status", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), format!("{body}\n"));
}

#[test]
fn status_with_every_node_down_prints_them_down_and_exits_1() {
    let unavailable = FakeHttp::start(503, "starting\n");
    let output = raftlb(
        &[refusing_addr(), unavailable.addr],
        &["--timeout-ms", "500", "status"],
    );
    assert_eq!(output.status.code(), Some(1));
    let out = stdout(&output);
    assert_eq!(
        out.lines().filter(|l| l.contains(" down ")).count(),
        2,
        "{out}"
    );
    assert!(out.contains("answered 503: starting"), "{out}");
    assert_eq!(stderr(&output), "raftlb: status: no node answered\n");
}

#[test]
fn bad_usage_and_bad_config_exit_2() {
    let addr = refusing_addr();
    for args in [
        &[][..],
        &["frobnicate"],
        &["prime"],
        &["status", "--bogus"],
        &["--timeout-ms", "0", "status"],
    ] {
        let output = raftlb(&[addr], args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    let output = Command::new(env!("CARGO_BIN_EXE_raftlb"))
        .args(["--nodes", "/nonexistent/nodes.txt", "status"])
        .output()
        .expect("run raftlb");
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).starts_with("raftlb: cannot read /nonexistent/nodes.txt"));
}

/// Runs `raftlb bench ARGS` (split at spaces) in an empty directory: no
/// nodes.txt there.
fn bench(args: &str) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    Command::new(support::CLIENT)
        .current_dir(dir.path())
        .arg("bench")
        .args(args.split_whitespace())
        .output()
        .expect("run raftlb bench")
}

/// The `--json` report on stdout.
fn report(output: &Output) -> serde_json::Value {
    serde_json::from_str(stdout(output).trim())
        .unwrap_or_else(|e| panic!("{e}: {:?} {}", stdout(output), stderr(output)))
}

/// A raftlb-worker on a free port, answering `/health`.
fn worker(dir: &std::path::Path) -> (support::Proc, String) {
    let port = support::free_port();
    let args = vec!["--port".to_string(), port.to_string()];
    let proc = support::spawn("worker", support::WORKER, &args, &dir.join("worker.log"));
    let url = format!("http://127.0.0.1:{port}");
    support::wait_for("the worker's /health", Duration::from_secs(10), || {
        support::get(&format!("{url}/health")).filter(|(code, _, _)| *code == 200)
    });
    (proc, url)
}

#[test]
fn bench_prime_against_a_worker_reports_ok_requests_and_no_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_worker, url) = worker(dir.path());
    let output = bench(&format!(
        "prime --target {url}/ -c 4 --duration-secs 1 --warmup-secs 0.2 --json"
    ));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let json = report(&output);
    assert_eq!(json["kind"], "prime");
    assert_eq!(json["target"], url.as_str());
    assert_eq!(json["concurrency"], 4);
    assert!(json["ok"].as_u64().expect("ok") > 0, "{json}");
    assert_eq!(json["failed"], 0, "{json}");
    assert_eq!(json["failures"], serde_json::json!({}));
    let secs = json["secs"].as_f64().expect("secs");
    assert!((0.9..=1.1).contains(&secs), "{json}");
    let p50 = json["p50_ms"].as_f64().expect("a p50 when ok > 0");
    let max = json["max_ms"].as_f64().expect("a max when ok > 0");
    assert!(p50 > 0.0 && p50 <= max, "{json}");

    // Without --json: one human line.
    let output = bench(&format!(
        "prime --target {url} -c 2 --duration-secs 0.3 --warmup-secs 0"
    ));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let line = stdout(&output);
    assert!(
        line.starts_with(&format!("prime {url} c=2 0.3 s: "))
            && line.contains(" ok/s, 0 failed; latency ms p50 "),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1, "{line}");
}

#[test]
fn bench_stops_at_max_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_worker, url) = worker(dir.path());
    let output = bench(&format!(
        "prime --target {url} -c 3 --warmup-secs 0 --max-requests 40 --json"
    ));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let json = report(&output);
    assert_eq!(json["ok"], 40, "{json}");
    assert!(json["secs"].as_f64().expect("secs") < 5.0, "{json}");
}

#[test]
fn bench_mixed_primes_at_a_rate_send_that_many_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_worker, url) = worker(dir.path());
    let output = bench(&format!(
        "prime --target {url} -c 4 --costly-n 100000-200000 --cheap-n 10-1000 --seed 3 \
         --rate 100 --duration-secs 1 --warmup-secs 0 --json"
    ));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let json = report(&output);
    assert_eq!(json["failed"], 0, "{json}");
    // 100 due in the second; the last few may be in flight at its end.
    let ok = json["ok"].as_u64().expect("ok");
    assert!((90..=101).contains(&ok), "{json}");
}

#[test]
fn bench_threads_take_turns_over_several_targets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_worker, url) = worker(dir.path());
    let refusing = format!("http://{}", refusing_addr());
    let output = bench(&format!(
        "prime --target {url} --target {refusing} -c 2 --duration-secs 0.5 --warmup-secs 0 --json"
    ));
    let json = report(&output);
    assert_eq!(json["target"], format!("{url},{refusing}"), "{json}");
    // Thread 0 on the worker, thread 1 on the port that refuses.
    assert!(json["ok"].as_u64().expect("ok") > 0, "{json}");
    assert!(
        json["failures"]["connect"].as_u64().expect("connect") > 0,
        "{json}"
    );
}

#[test]
fn bench_note_against_a_cluster_writes_notes_of_the_size_asked() {
    let _one = support::exclusive();
    let cluster = support::Cluster::start(support::Options {
        nodes: 3,
        workers: 0,
        ..support::Options::default()
    });
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    let follower = cluster.url((leader + 1) % 3, "");
    let output = bench(&format!(
        "note --target {follower} -c 2 --duration-secs 1 --warmup-secs 0 --size-bytes 300 --json"
    ));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let json = report(&output);
    assert_eq!(json["kind"], "note");
    assert!(json["ok"].as_u64().expect("ok") > 0, "{json}");
    let (code, note, _) = support::get(&cluster.url(leader, "/note")).expect("the leader answers");
    assert_eq!(code, 200);
    assert_eq!(note.len(), 300, "{note}");
    assert!(note.starts_with('c') && note.ends_with('x'), "{note}");
}

#[test]
fn bench_refuses_bad_targets_and_flags_with_exit_2() {
    for target in [
        "https://127.0.0.1:8080",
        "http://127.0.0.1",
        "http://127.0.0.1:8080/100",
        "127.0.0.1:8080",
        "garbage",
    ] {
        let output = bench(&format!("prime --target {target} --duration-secs 0.1"));
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{target}: {err}");
        assert!(
            err.starts_with("raftlb: bad --target") && err.lines().count() == 1,
            "{err}"
        );
        assert_eq!(stdout(&output), "");
    }
    for args in [
        "prime --target http://127.0.0.1:9 -c 0",
        "prime --target http://127.0.0.1:9 -c 1025",
        "prime --target http://127.0.0.1:9 --n 0",
        "prime --target http://127.0.0.1:9 --duration-secs 0",
        "prime --target http://127.0.0.1:9 --costly-n 5-1",
        "prime --target http://127.0.0.1:9 --costly-n 0-10",
        "prime --target http://127.0.0.1:9 --n 5 --costly-n 1-2",
        "prime --target http://127.0.0.1:9 --cheap-n 1-2",
        "prime --target http://127.0.0.1:9 --costly-n 1-2 --costly-percent 101",
        "prime --target http://127.0.0.1:9 --rate 0",
        "note --target http://127.0.0.1:9 --size-bytes 32769",
        "note --target http://127.0.0.1:9 --size-bytes 0",
        "note",
    ] {
        let output = bench(args);
        assert_eq!(output.status.code(), Some(2), "{args}: {}", stderr(&output));
    }
}

#[test]
fn bench_with_nothing_listening_exits_1_saying_connect_failed() {
    let target = format!("http://{}", refusing_addr());
    let output = bench(&format!(
        "note --target {target} --duration-secs 0.5 --warmup-secs 0 --json"
    ));
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let json = report(&output);
    assert_eq!(json["ok"], 0);
    let failed = json["failed"].as_u64().expect("failed");
    let connect = json["failures"]["connect"].as_u64();
    assert!(failed > 0 && connect == Some(failed), "{json}");
    // About one attempt per 10 ms pause, not a hot loop.
    assert!(failed <= 60, "{json}");
    let percentiles = ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"];
    assert!(percentiles.iter().all(|p| json[p].is_null()), "{json}");
    let err = stderr(&output);
    assert!(
        err.starts_with("raftlb: bench note: no request succeeded; most failures: ")
            && err.contains(" × connect (")
            && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn bench_against_a_silent_target_counts_timeouts_of_timeout_ms() {
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let target = format!("http://{}", silent.local_addr().expect("addr"));
    let started = std::time::Instant::now();
    let output = bench(&format!(
        "prime --target {target} -c 1 --timeout-ms 200 --duration-secs 0.5 --warmup-secs 0 --json"
    ));
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let json = report(&output);
    // 0.2 s and 0.4 s in; the third would end after the window (fewer only
    // if the machine stalls the client for 100 ms).
    let timeouts = json["failures"]["timeout"].as_u64();
    assert!(timeouts.is_some_and(|n| (1..=2).contains(&n)), "{json}");
    assert_eq!(json["failed"].as_u64(), timeouts, "{json}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(stderr(&output).contains(" × timeout (no answer in time)"));
}
