//! The real `raftlb-worker` binary on a free loopback port: the primes SPEC lists,
//! every bad input SPEC "Numbers" names, the other paths and methods, its flags, its
//! exit codes, and a clean stop on SIGTERM and SIGINT.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const WORKER: &str = env!("CARGO_BIN_EXE_raftlb-worker");
/// Start-up on a loaded machine takes milliseconds; this only bounds a broken one.
const START_MAX: Duration = Duration::from_secs(10);
/// A stop on a signal must be this prompt.
const STOP_MAX: Duration = Duration::from_secs(5);
/// Attempts at a free port: another process may take the port between our probe
/// and the worker's bind.
const START_ATTEMPTS: usize = 5;

/// A running worker, killed on drop so a failing test never leaves one behind.
struct Worker {
    child: Child,
    url: String,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that returns 4xx/5xx as answers and never waits long.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// A loopback port free a moment ago.
fn free_port() -> u16 {
    let probe = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    probe
        .local_addr()
        .expect("a bound listener has an address")
        .port()
}

/// Starts the worker with `flags` on a free port and waits until `/health` answers.
fn start(flags: &[&str]) -> Worker {
    for _ in 0..START_ATTEMPTS {
        let port = free_port().to_string();
        let child = Command::new(WORKER)
            .args(["--host", "127.0.0.1", "--port", &port])
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start raftlb-worker");
        let mut worker = Worker {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        if wait_healthy(&mut worker) {
            return worker;
        }
    }
    panic!("raftlb-worker did not start in {START_ATTEMPTS} attempts");
}

/// True once `/health` answers 200; false if the worker exited (its port was taken)
/// or did not answer within `START_MAX`.
fn wait_healthy(worker: &mut Worker) -> bool {
    let deadline = Instant::now() + START_MAX;
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_millis(500)))
        .build()
        .new_agent();
    while Instant::now() < deadline {
        if !matches!(worker.child.try_wait(), Ok(None)) {
            return false;
        }
        if agent.get(format!("{}/health", worker.url)).call().is_ok() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    false
}

/// GET `path`: status and body.
fn get(worker: &Worker, path: &str) -> (u16, String) {
    let mut response = agent()
        .get(format!("{}{path}", worker.url))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let body = response.body_mut().read_to_string().expect("a utf-8 body");
    (response.status().as_u16(), body)
}

/// Waits at most `limit` for the process to exit.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn primes_from_spec_are_answered_as_plain_digits() {
    let worker = start(&[]);
    for (n, prime) in [(1, "2"), (3, "5"), (10000, "104729"), (1000000, "15485863")] {
        assert_eq!(
            get(&worker, &format!("/{n}")),
            (200, prime.to_string()),
            "N = {n}"
        );
    }
    let response = agent()
        .get(format!("{}/3", worker.url))
        .call()
        .expect("answers");
    let content_type = response
        .headers()
        .get("content-type")
        .expect("a content type");
    assert_eq!(content_type, "text/plain; charset=utf-8");
    assert_eq!(get(&worker, "/health"), (200, "ok".to_string()));
}

/// Slow N computed one at a time ahead of a cached one.
const SLOW_REQUESTS: usize = 8;

#[test]
fn a_cached_answer_does_not_wait_behind_slow_computations() {
    // One computing place and eight slow N (around 1e11, a few hundred ms
    // each) in the worker at once: an N it answered before must come from
    // the cache while most of them still wait, not after all of them.
    let worker = start(&["--threads", "1", "--max-n", "100000000000"]);
    assert_eq!(get(&worker, "/10000"), (200, "104729".to_string()));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let slow: Vec<_> = (0..SLOW_REQUESTS)
        .map(|i| {
            let url = format!("{}/{}", worker.url, 99_999_999_000 + i as u64);
            let answered = answered.clone();
            thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_secs(120)))
                    .http_status_as_error(false)
                    .build()
                    .into();
                let status = agent.get(&url).call().map(|r| r.status().as_u16());
                answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                status
            })
        })
        .collect();
    // Long enough for them to reach the worker; the first one computes for
    // far longer than this.
    thread::sleep(Duration::from_millis(300));
    assert_eq!(get(&worker, "/10000"), (200, "104729".to_string()));
    let done = answered.load(std::sync::atomic::Ordering::SeqCst);
    for handle in slow {
        let status = handle.join().expect("no client thread panicked");
        assert!(matches!(status, Ok(200)), "{status:?}");
    }
    assert!(
        done < SLOW_REQUESTS / 2,
        "the cached N was answered after {done} of {SLOW_REQUESTS} slow ones"
    );
}

#[test]
fn every_bad_number_gets_400_with_a_one_line_reason() {
    let worker = start(&[]);
    let twenty_one_digits = format!("/{}", "1".repeat(21));
    let bad = [
        "/0",
        "/-1",
        "/abc",
        "/1e3",
        "/12x",
        "/",
        &twenty_one_digits,
        "/10000000001",
    ];
    for path in bad {
        let (status, body) = get(&worker, path);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body.ends_with('\n') && body.lines().count() == 1,
            "{path}: {body:?}"
        );
    }
}

#[test]
fn other_paths_get_404_and_other_methods_405() {
    let worker = start(&[]);
    for path in ["/nope/x", "/a/b", "/5/"] {
        assert_eq!(get(&worker, path).0, 404, "{path}");
    }
    // One segment is always N (SPEC "Numbers": `abc` is a bad N, 400), so `/nope` is too.
    assert_eq!(get(&worker, "/nope").0, 400);
    let response = agent()
        .post(format!("{}/5", worker.url))
        .send("")
        .expect("answers");
    assert_eq!(response.status(), 405);
    assert_eq!(
        response.headers().get("allow").expect("an Allow header"),
        "GET"
    );
}

#[test]
fn max_n_flag_makes_larger_n_a_400() {
    let worker = start(&["--max-n", "100"]);
    assert_eq!(get(&worker, "/100"), (200, "541".to_string()));
    let (status, body) = get(&worker, "/101");
    assert_eq!(status, 400, "{body}");
}

/// Sends `signal` (a `kill` name) and expects exit 0 within `STOP_MAX`.
fn stops_cleanly_on(signal: &str) {
    let mut worker = start(&[]);
    let pid = libc::pid_t::try_from(worker.child.id()).expect("a pid fits pid_t");
    let number = match signal {
        "TERM" => libc::SIGTERM,
        "INT" => libc::SIGINT,
        other => panic!("unknown signal {other}"),
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    assert_eq!(
        unsafe { libc::kill(pid, number) },
        0,
        "kill -{signal} {pid}"
    );
    let status = wait_exit(&mut worker.child, STOP_MAX);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "after SIG{signal}: {status:?}"
    );
}

#[test]
fn sigterm_stops_it_with_exit_0() {
    stops_cleanly_on("TERM");
}

#[test]
fn sigint_stops_it_with_exit_0() {
    stops_cleanly_on("INT");
}

#[test]
fn port_in_use_exits_1_with_a_one_line_message() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    let port = taken
        .local_addr()
        .expect("a bound listener has an address")
        .port();
    let mut child = Command::new(WORKER)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .env("RUST_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start raftlb-worker");
    let status = wait_exit(&mut child, START_MAX);
    let _ = child.kill();
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr).expect("read its stderr");
    }
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!("raftlb-worker: cannot listen on 127.0.0.1:{port}: address in use\n")
    );
}

#[test]
fn bad_flags_exit_2() {
    for flags in [
        &["--port", "x"][..],
        &["--max-n", "0"],
        &["--threads", "0"],
        &["--bogus"],
    ] {
        let status = Command::new(WORKER)
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run raftlb-worker");
        assert_eq!(status.code(), Some(2), "{flags:?}");
    }
}

/// tiny_http's accept loop ended on the first EMFILE, leaving a process that
/// never answered again. With at most 48 descriptors, 120 connections held
/// open make `accept` fail for lack of them; once they close, the worker must
/// answer again, and it must have said what happened.
#[test]
fn running_out_of_file_descriptors_does_not_end_the_accept_loop() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let log_path = dir.path().join("worker.log");
    let log = std::fs::File::create(&log_path).expect("create the log");
    let port = free_port().to_string();
    let mut command = Command::new(WORKER);
    command
        .args(["--host", "127.0.0.1", "--port", &port])
        .stdout(log.try_clone().expect("clone the log"))
        .stderr(log);
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 48,
                rlim_max: 48,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut worker = Worker {
        child: command.spawn().expect("start raftlb-worker"),
        url: format!("http://127.0.0.1:{port}"),
    };
    assert!(wait_healthy(&mut worker), "the worker did not start");

    let held: Vec<std::net::TcpStream> = (0..120)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(
                &format!("127.0.0.1:{port}").parse().expect("address"),
                Duration::from_secs(1),
            )
            .ok()
        })
        .collect();
    assert!(held.len() > 60, "only {} connections opened", held.len());
    // Let the accept loop run into the limit.
    thread::sleep(Duration::from_millis(500));
    assert!(
        matches!(worker.child.try_wait(), Ok(None)),
        "the worker died"
    );
    drop(held);

    let deadline = Instant::now() + Duration::from_secs(15);
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(1)))
        .build()
        .new_agent();
    let answered = loop {
        if agent.get(format!("{}/health", worker.url)).call().is_ok() {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        answered,
        "no answer after the connections closed; log:\n{text}"
    );
    assert!(
        text.contains("file descriptors") || text.contains("Too many open files"),
        "the worker never ran out, or did not say so; log:\n{text}"
    );
}
