//! Process tests of `raftlb-daemon`: the real binary against a fake node and a
//! fake worker served by `raftlb::http` in this process, on loopback port 0.
//!
//! They prove that reports arrive in `seq` order and in range, that a dead node
//! (refusing or silent) does not slow the reports to a live one, that reports
//! stop while the worker's health fails or the measured process is gone and
//! resume after, that every report is signed with the cluster key beside
//! nodes.txt, that SIGTERM exits 0, that a bad nodes.txt exits 2 naming the
//! line, and that a missing key exits 2 saying how to make one. With
//! `--cgroup` on a real cpu cgroup (created when the host allows it: root and
//! a cpu controller), a busy process held to a quarter of a CPU reads as full
//! (cpu near 100 of its quota) and waiting, while an idle cgroup reads low.
//! `--health-path` is the path the daemon asks. Every wait is bounded;
//! children are killed and cgroups removed by guards on drop.

#[path = "daemon/cgroup.rs"]
mod cgroup;
mod support;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use raftlb::report::Report;
use support::FakeHttp;

/// The requests a fake node got at `/report`: the daemon also asks its
/// `/status` now and then, for the configuration.
fn report_requests(node: &FakeHttp) -> Vec<support::Recorded> {
    (node.requests().into_iter())
        .filter(|r| r.url == "/report")
        .collect()
}

/// How many reports the fake node got.
fn report_count(node: &FakeHttp) -> usize {
    report_requests(node).len()
}

/// The fake node's reports, parsed.
fn reports_of(node: &FakeHttp) -> Vec<Report> {
    report_requests(node)
        .iter()
        .map(|r| Report::parse(&r.body).unwrap_or_else(|e| panic!("bad report {e}: {:?}", r.body)))
        .collect()
}

/// Asserts that every request the fake node got carried the tag of its body
/// under `key`.
fn assert_signed_with(node: &FakeHttp, key: &std::path::Path) {
    let keys = raftlb::auth::Keys::new(raftlb::auth::read_key(key).expect("key"), None);
    let requests = report_requests(node);
    assert!(!requests.is_empty());
    for r in requests {
        assert_eq!(
            keys.verify_body(r.auth.as_deref(), &r.body),
            Ok(()),
            "{:?}",
            r.auth
        );
    }
}

/// A child process killed and reaped when the test ends, whatever happened.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Guard {
    /// Waits at most `limit` for the child to exit.
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "child did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Polls `done` every 20 ms for at most `limit`; true if it became true.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// nodes.txt in `dir`, with a cluster key beside it where the daemon looks
/// by default.
fn nodes_file(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("nodes.txt");
    std::fs::write(&path, text).expect("write nodes.txt");
    let key = dir.path().join("cluster.key");
    if !key.exists() {
        raftlb::auth::keygen(&key).expect("write the cluster key");
    }
    path
}

/// A loopback address where nothing listens: bound, then released.
fn refusing_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

fn daemon(args: &[&str]) -> Guard {
    let child = Command::new(env!("CARGO_BIN_EXE_raftlb-daemon"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start raftlb-daemon");
    Guard(child)
}

fn assert_reports_are_sound(reports: &[Report], worker: &str) {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    for pair in reports.windows(2) {
        assert!(pair[0].seq < pair[1].seq, "seq must grow: {pair:?}");
    }
    for r in reports {
        assert_eq!(r.server, "w1");
        assert_eq!(r.url, worker);
        assert!(
            (0.0..=100.0).contains(&r.cpu) && (0.0..=100.0).contains(&r.wait),
            "{r:?}"
        );
        assert!(
            r.seq <= now_ms && r.seq + 120_000 > now_ms,
            "seq starts at start ms: {r:?}"
        );
    }
}

/// Waits until the worker has answered `n` more health checks (each daemon
/// tick makes one), so the tests count ticks instead of guessing durations.
fn wait_ticks(worker: &FakeHttp, n: usize) {
    let target = worker.count() + n;
    let limit = Duration::from_secs(10);
    assert!(
        wait_until(limit, || worker.count() >= target),
        "daemon stopped ticking"
    );
}

/// Asserts that no report arrives over 5 ticks, after 2 ticks and 200 ms have
/// let any report already in flight land.
fn assert_no_reports_for_a_while(node: &FakeHttp, worker: &FakeHttp, why: &str) {
    wait_ticks(worker, 2);
    std::thread::sleep(Duration::from_millis(200));
    let before = report_count(node);
    wait_ticks(worker, 5);
    assert_eq!(report_count(node), before, "{why}");
}

#[test]
fn reports_flow_despite_dead_nodes_and_pause_while_the_worker_is_unhealthy() {
    let node = FakeHttp::start(202, "accepted");
    let worker = FakeHttp::start(200, "ok");
    // A silent node: the kernel accepts connections, nobody ever answers, so
    // each report to it costs the full 500 ms timeout.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "A {}\nB {}\nC {}\n",
        refusing_addr(),
        silent.local_addr().expect("addr"),
        node.addr
    );
    let nodes = nodes_file(&dir, &text);
    let pid = std::process::id().to_string();
    let worker_url = worker.url();
    let mut child = daemon(&[
        "--worker",
        &worker_url,
        "--id",
        "w1",
        "--nodes",
        nodes.to_str().expect("utf-8"),
        "--interval-ms",
        "100",
        "--pid",
        &pid,
    ]);

    assert!(
        wait_until(Duration::from_secs(10), || report_count(&node) >= 1),
        "no first report"
    );
    // Had the silent node delayed the others, C would get one report per
    // 500 ms while the daemon ticks every 100 ms: about 2 out of 10.
    // Had the main loop waited for the nodes, 10 ticks would take 6 s.
    let (reports_before, ticks_before) = (report_count(&node), worker.count());
    let started = Instant::now();
    wait_ticks(&worker, 10);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "ticks slowed by a dead node"
    );
    std::thread::sleep(Duration::from_millis(200));
    let ticks = worker.count() - ticks_before;
    let reports = report_count(&node) - reports_before;
    assert!(reports + 2 >= ticks, "{reports} reports in {ticks} ticks");
    assert_reports_are_sound(&reports_of(&node), &worker_url);
    assert_signed_with(&node, &dir.path().join("cluster.key"));

    worker.set_status(503);
    assert_no_reports_for_a_while(&node, &worker, "reports while /health answered 503");

    let paused_at = report_count(&node);
    worker.set_status(200);
    let resumed = || report_count(&node) >= paused_at + 3;
    assert!(wait_until(Duration::from_secs(10), resumed), "no resume");
    assert_reports_are_sound(&reports_of(&node), &worker_url);

    let pid = libc::pid_t::try_from(child.0.id()).expect("a pid fits pid_t");
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    assert_eq!(
        unsafe { libc::kill(pid, libc::SIGTERM) },
        0,
        "kill -TERM {pid}"
    );
    let status = child.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "SIGTERM must exit 0");
}

#[test]
fn reports_stop_when_the_measured_process_is_gone() {
    let node = FakeHttp::start(202, "accepted");
    let worker = FakeHttp::start(200, "ok");
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = nodes_file(&dir, &format!("A {}\n", node.addr));
    let mut measured = Guard(
        Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("start sleep"),
    );
    let pid = measured.0.id().to_string();
    let worker_url = worker.url();
    let _child = daemon(&[
        "--worker",
        &worker_url,
        "--id",
        "w1",
        "--nodes",
        nodes.to_str().expect("utf-8"),
        "--interval-ms",
        "100",
        "--pid",
        &pid,
    ]);
    assert!(
        wait_until(Duration::from_secs(10), || report_count(&node) >= 3),
        "no reports"
    );
    measured.0.kill().expect("kill sleep");
    measured.wait_exit(Duration::from_secs(5));
    assert_no_reports_for_a_while(&node, &worker, "reports about a process that is gone");
    assert_reports_are_sound(&reports_of(&node), &worker_url);
}

#[test]
fn a_bad_nodes_file_exits_2_naming_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = nodes_file(&dir, "# cluster\nA 127.0.0.1:1\nB nonsense\n");
    let output = Command::new(env!("CARGO_BIN_EXE_raftlb-daemon"))
        .args([
            "--worker",
            "http://127.0.0.1:13337",
            "--nodes",
            nodes.to_str().expect("utf-8"),
        ])
        .output()
        .expect("run raftlb-daemon");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 3"), "{stderr}");
}

#[test]
fn a_daemon_without_a_key_exits_2_saying_how_to_make_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = dir.path().join("nodes.txt");
    std::fs::write(&nodes, "A 127.0.0.1:1\n").expect("write nodes.txt");
    let output = Command::new(env!("CARGO_BIN_EXE_raftlb-daemon"))
        .args(["--worker", "http://127.0.0.1:13337", "--nodes"])
        .arg(&nodes)
        .output()
        .expect("run raftlb-daemon");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("raftlb keygen") && stderr.contains("cluster.key"),
        "{stderr}"
    );
}

#[test]
fn bad_usage_exits_2() {
    let cases: [&[&str]; 4] = [
        &[],
        &["--worker", "127.0.0.1:13337"],
        &["--worker", "http://127.0.0.1:13337", "--interval-ms", "10"],
        &["--worker", "http://127.0.0.1:13337", "--bogus"],
    ];
    for args in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_raftlb-daemon"))
            .args(args)
            .output()
            .expect("run raftlb-daemon");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn reports_follow_the_health_path_and_stop_while_it_fails() {
    let node = FakeHttp::start(202, "accepted");
    let worker = FakeHttp::healthy_at("/ready");
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = nodes_file(&dir, &format!("A {}\n", node.addr));
    let nodes = nodes.to_str().expect("utf-8");
    let worker_url = worker.url();
    let common = [
        "--worker",
        &worker_url,
        "--id",
        "w1",
        "--nodes",
        nodes,
        "--interval-ms",
        "100",
    ];

    // The default /health answers 404 here: the worker counts as down.
    let default_path = daemon(&common);
    assert_no_reports_for_a_while(&node, &worker, "reports while GET /health answered 404");
    drop(default_path);
    assert!(
        worker.paths().iter().all(|p| p == "/health"),
        "{:?}",
        worker.paths()
    );

    let asked_before = worker.paths().len();
    let _ready = daemon(&[&common[..], &["--health-path", "/ready"]].concat());
    assert!(
        wait_until(Duration::from_secs(10), || report_count(&node) >= 3),
        "no reports while GET /ready answered 200"
    );
    let asked: Vec<String> = worker.paths().split_off(asked_before);
    assert!(asked.iter().all(|p| p == "/ready"), "{asked:?}");
    assert_reports_are_sound(&reports_of(&node), &worker_url);
}

/// The median of the reports of `server` after the first two (the first
/// intervals may straddle the daemon's start).
fn median_load(reports: &[Report], server: &str) -> (f64, f64) {
    let ours: Vec<&Report> = reports
        .iter()
        .filter(|r| r.server == server)
        .skip(2)
        .collect();
    assert!(!ours.is_empty(), "no reports from {server}");
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (
        median(ours.iter().map(|r| r.cpu).collect()),
        median(ours.iter().map(|r| r.wait).collect()),
    )
}

#[test]
fn a_cgroup_at_its_quota_reads_full_and_waiting_and_an_idle_one_reads_low() {
    let tag = format!("raftlb-test-{}", std::process::id());
    let made = cgroup::TestCgroup::create(&format!("{tag}-busy"), Some(25_000)).and_then(|busy| {
        let idle = cgroup::TestCgroup::create(&format!("{tag}-idle"), None)?;
        Ok((busy, idle))
    });
    // Declared before the processes so that they are killed before the
    // cgroups are removed (locals drop in reverse order).
    let (busy_cgroup, idle_cgroup) = match made {
        Ok(pair) => pair,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let spin = Guard(
        Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("start a busy loop"),
    );
    let sleeper = Guard(
        Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("start sleep"),
    );
    busy_cgroup.add(spin.0.id()).expect("move the busy loop in");
    idle_cgroup.add(sleeper.0.id()).expect("move sleep in");

    let node = FakeHttp::start(202, "accepted");
    let worker = FakeHttp::start(200, "ok");
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = nodes_file(&dir, &format!("A {}\n", node.addr));
    let nodes = nodes.to_str().expect("utf-8");
    let worker_url = worker.url();
    let run = |id: &str, group: &cgroup::TestCgroup| {
        let path = group.path().to_str().expect("utf-8").to_string();
        let args = ["--worker", &worker_url, "--id", id, "--nodes", nodes];
        daemon(&[&args[..], &["--interval-ms", "250", "--cgroup", &path]].concat())
    };
    let _busy_daemon = run("busy", &busy_cgroup);
    let _idle_daemon = run("idle", &idle_cgroup);
    let enough = || {
        let reports = reports_of(&node);
        ["busy", "idle"]
            .iter()
            .all(|s| reports.iter().filter(|r| r.server == *s).count() >= 10)
    };
    assert!(
        wait_until(Duration::from_secs(20), enough),
        "too few reports"
    );

    let reports = reports_of(&node);
    let (busy_cpu, busy_wait) = median_load(&reports, "busy");
    let (idle_cpu, idle_wait) = median_load(&reports, "idle");
    eprintln!(
        "cgroup {}: busy (quota 25 %): cpu {busy_cpu} wait {busy_wait}; idle: cpu {idle_cpu} wait {idle_wait}",
        busy_cgroup.path().display()
    );
    for r in reports.iter().filter(|r| r.server == "busy") {
        eprintln!("  busy report: cpu {} wait {}", r.cpu, r.wait);
    }
    assert!(
        busy_cpu >= 70.0,
        "a cgroup at its quota is full: cpu {busy_cpu}"
    );
    assert!(
        busy_wait >= 50.0,
        "throttled most of the time: wait {busy_wait}"
    );
    assert!(idle_cpu <= 10.0, "an idle cgroup: cpu {idle_cpu}");
    assert!(idle_wait <= 20.0, "an idle cgroup: wait {idle_wait}");
    // What the machines bench reads to say how busy each machine was: the
    // busy loop has used its quota's share of the seconds it ran.
    let (busy_us, idle_us) = (busy_cgroup.usage_us(), idle_cgroup.usage_us());
    assert!(
        busy_us.is_some_and(|us| us > 500_000),
        "busy: {busy_us:?} µs"
    );
    assert!(
        idle_us.is_some_and(|us| us < 100_000),
        "idle: {idle_us:?} µs"
    );
    assert_signed_with(&node, &dir.path().join("cluster.key"));
}

#[test]
fn bad_cgroup_and_health_path_usage_exits_2_saying_what_was_expected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_a_cgroup = dir.path().to_str().expect("utf-8");
    let worker = ["--worker", "http://127.0.0.1:13337", "--insecure"];
    let cases: [(&[&str], &str); 4] = [
        (&["--cgroup", "/no/such/cgroup"], "must be a cpu cgroup"),
        (&["--cgroup", not_a_cgroup], "has no cpu controller"),
        (&["--pid", "1", "--cgroup", "x"], "cannot be used with"),
        (
            &["--health-path", "health"],
            "must be a path starting with /",
        ),
    ];
    let nodes = nodes_file(&dir, "A 127.0.0.1:1\n");
    for (args, expected) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_raftlb-daemon"))
            .args(worker)
            .arg("--nodes")
            .arg(&nodes)
            .args(args)
            .output()
            .expect("run raftlb-daemon");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
