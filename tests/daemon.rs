//! Process tests of `raftlb-daemon`: the real binary against a fake node and a
//! fake worker served by `raftlb::http` in this process, on loopback port 0.
//!
//! They prove that reports arrive in `seq` order and in range, that a dead node
//! (refusing or silent) does not slow the reports to a live one, that reports
//! stop while the worker's health fails or the measured process is gone and
//! resume after, that every report is signed with the cluster key beside
//! nodes.txt, that SIGTERM exits 0, that a bad nodes.txt exits 2 naming the
//! line, and that a missing key exits 2 saying how to make one. Every wait is bounded; children are killed by a guard on drop.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use raftlb::http::{self, Limits, Reply, Request, Service, Serving};
use raftlb::report::Report;

/// A request's body and its X-Raftlb-Auth header.
type Recorded = (Vec<u8>, Option<String>);

/// A `raftlb::http` server on 127.0.0.1:0 that answers every request with
/// `status` (switchable) and records the bodies of the requests it got.
struct FakeHttp {
    addr: SocketAddr,
    recorder: Arc<Recorder>,
    /// Stops the server when the fake is dropped.
    _serving: Serving,
}

/// What the fake answers, and what it got.
struct Recorder {
    status: AtomicU16,
    bodies: Mutex<Vec<Recorded>>,
}

impl Service for Recorder {
    /// A report is at most 4 KiB.
    fn body_limit(&self, _method: &str, _path: &str) -> usize {
        4096
    }

    fn handle(&self, request: &Request) -> Reply {
        let tag = request
            .header(raftlb::auth::AUTH_HEADER)
            .map(str::to_string);
        self.bodies
            .lock()
            .expect("recorder lock")
            .push((request.body().to_vec(), tag));
        http::text(self.status.load(Ordering::SeqCst), "ok")
    }
}

impl FakeHttp {
    fn start(status: u16) -> FakeHttp {
        let listener = http::bind("127.0.0.1:0").expect("bind loopback port 0");
        let addr = listener.local_addr();
        let recorder = Arc::new(Recorder {
            status: AtomicU16::new(status),
            bodies: Mutex::new(Vec::new()),
        });
        let serving = http::serve(listener, Limits::default(), Arc::clone(&recorder));
        FakeHttp {
            addr,
            recorder,
            _serving: serving,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn count(&self) -> usize {
        self.recorder.bodies.lock().expect("recorder lock").len()
    }

    fn reports(&self) -> Vec<Report> {
        let bodies = self.recorder.bodies.lock().expect("recorder lock").clone();
        bodies
            .iter()
            .map(|(b, _)| Report::parse(b).unwrap_or_else(|e| panic!("bad report {e}: {b:?}")))
            .collect()
    }

    /// Asserts that every request carried the tag of its body under `key`.
    fn assert_signed_with(&self, key: &std::path::Path) {
        let keys = raftlb::auth::Keys::new(raftlb::auth::read_key(key).expect("key"), None);
        let bodies = self.recorder.bodies.lock().expect("recorder lock").clone();
        assert!(!bodies.is_empty());
        for (body, tag) in bodies {
            assert_eq!(keys.verify_body(tag.as_deref(), &body), Ok(()), "{tag:?}");
        }
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
    let before = node.count();
    wait_ticks(worker, 5);
    assert_eq!(node.count(), before, "{why}");
}

#[test]
fn reports_flow_despite_dead_nodes_and_pause_while_the_worker_is_unhealthy() {
    let node = FakeHttp::start(202);
    let worker = FakeHttp::start(200);
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
        wait_until(Duration::from_secs(10), || node.count() >= 1),
        "no first report"
    );
    // Had the silent node delayed the others, C would get one report per
    // 500 ms while the daemon ticks every 100 ms: about 2 out of 10.
    // Had the main loop waited for the nodes, 10 ticks would take 6 s.
    let (reports_before, ticks_before) = (node.count(), worker.count());
    let started = Instant::now();
    wait_ticks(&worker, 10);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "ticks slowed by a dead node"
    );
    std::thread::sleep(Duration::from_millis(200));
    let ticks = worker.count() - ticks_before;
    let reports = node.count() - reports_before;
    assert!(reports + 2 >= ticks, "{reports} reports in {ticks} ticks");
    assert_reports_are_sound(&node.reports(), &worker_url);
    node.assert_signed_with(&dir.path().join("cluster.key"));

    worker.recorder.status.store(503, Ordering::SeqCst);
    assert_no_reports_for_a_while(&node, &worker, "reports while /health answered 503");

    let paused_at = node.count();
    worker.recorder.status.store(200, Ordering::SeqCst);
    let resumed = || node.count() >= paused_at + 3;
    assert!(wait_until(Duration::from_secs(10), resumed), "no resume");
    assert_reports_are_sound(&node.reports(), &worker_url);

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
    let node = FakeHttp::start(202);
    let worker = FakeHttp::start(200);
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
        wait_until(Duration::from_secs(10), || node.count() >= 3),
        "no reports"
    );
    measured.0.kill().expect("kill sleep");
    measured.wait_exit(Duration::from_secs(5));
    assert_no_reports_for_a_while(&node, &worker, "reports about a process that is gone");
    assert_reports_are_sound(&node.reports(), &worker_url);
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
