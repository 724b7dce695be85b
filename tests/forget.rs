//! Forgetting servers, through real processes.
//!
//! - `raftlb server forget ID` signs `POST /admin/forget` with the cluster key,
//!   and the server is gone from every node's table once it answers; an unknown
//!   id is exit 1 saying so; no key is exit 2 saying how to make one; a wrong
//!   key is exit 1 with the node's 401.
//! - `POST /admin/forget` refuses a missing or wrong tag, an `at` more than 30 s
//!   off either way, a request used before, and bad JSON, each with its code and
//!   a reason, and none of them forgets anything.
//! - A server dead for `--forget-after` is removed by the leader on its own.
//!
//! Before this, a fake server id posted once stayed in the table for ever (253
//! of them filled it), and there was no way to remove one.

mod support;

use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use raftlb::auth::{Key, Keys, KEY_BYTES};
use raftlb::client::admin::forget_body;
use support::{exclusive, get, post_with, wait_for, Cluster, Options, CLIENT};

const SETTLE: Duration = Duration::from_secs(15);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// Whether node i's table holds `server` (None: the node did not answer).
fn holds(cluster: &Cluster, i: usize, server: &str) -> Option<bool> {
    Some(cluster.status(i)?.servers.iter().any(|s| s.id == server))
}

/// Waits until every live node agrees that `server` is (or is not) there.
fn wait_until_every_node(cluster: &Cluster, server: &str, present: bool) {
    wait_for(
        &format!("{server} present={present} on every node"),
        SETTLE,
        || {
            cluster
                .live()
                .iter()
                .all(|i| holds(cluster, *i, server) == Some(present))
                .then_some(())
        },
    );
}

fn raftlb(cluster: &Cluster, args: &[&str]) -> Output {
    Command::new(CLIENT)
        .args(["--nodes", &cluster.nodes_file()])
        .args(args)
        .output()
        .expect("run raftlb")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn responses(cluster: &Cluster, i: usize, code: u16) -> u64 {
    let (_, metrics, _) = get(&cluster.url(i, "/metrics")).expect("metrics");
    let name = format!("raftlb_http_responses_total{{code=\"{code}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&name)?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn raftlb_server_forget_removes_a_server_from_every_node() {
    let _one = exclusive();
    let mut cluster = Cluster::start(Options {
        nodes: 3,
        workers: 2,
        ..Options::default()
    });
    cluster.wait_for_leader(SETTLE);
    cluster.wait_for_servers(&[true, true], SETTLE);
    // A forgotten server whose daemon still reports comes back with the next
    // report: stop its daemon first, as an operator would.
    cluster.kill_daemon(1);

    let out = raftlb(&cluster, &["server", "forget", "server-2"]);
    assert!(
        out.status.success(),
        "{} {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("forgot server server-2"),
        "{}",
        text(&out.stdout)
    );
    wait_until_every_node(&cluster, "server-2", false);
    wait_until_every_node(&cluster, "server-1", true);
    // Primes still flow, through the server that is left.
    let (code, prime, _) = get(&cluster.url(0, "/10000")).expect("prime answered");
    assert_eq!((code, prime.trim()), (200, "104729"));

    let out = raftlb(&cluster, &["server", "forget", "server-2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("404"), "{}", text(&out.stderr));

    let elsewhere = tempfile::tempdir().expect("temp dir");
    let other_key = elsewhere.path().join("other.key");
    let out = raftlb(
        &cluster,
        &[
            "--key",
            &elsewhere.path().join("none.key").display().to_string(),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "clap wants a command");
    let out = Command::new(CLIENT)
        .args(["--nodes", &cluster.nodes_file()])
        .args([
            "--key",
            &elsewhere.path().join("none.key").display().to_string(),
        ])
        .args(["server", "forget", "server-1"])
        .output()
        .expect("run raftlb");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("raftlb keygen"),
        "{}",
        text(&out.stderr)
    );
    raftlb::auth::keygen(&other_key).expect("another key");
    let out = raftlb(
        &cluster,
        &[
            "--key",
            &other_key.display().to_string(),
            "server",
            "forget",
            "server-1",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));
    wait_until_every_node(&cluster, "server-1", true);
}

#[test]
fn admin_forget_refuses_bad_tags_stale_or_reused_requests_and_bad_json() {
    let _one = exclusive();
    let cluster = Cluster::start(Options {
        nodes: 3,
        workers: 1,
        ..Options::default()
    });
    cluster.wait_for_leader(SETTLE);
    cluster.wait_for_servers(&[true], SETTLE);
    let keys = cluster.keys();
    let wrong = Keys::new(Key::from_bytes([7; KEY_BYTES]), None);
    let url = cluster.url(1, "/admin/forget");
    let post = |body: &[u8], tag: Option<String>| {
        let headers: Vec<(&str, &str)> = tag
            .as_deref()
            .map(|t| vec![(raftlb::auth::AUTH_HEADER, t)])
            .unwrap_or_default();
        let answer = post_with(&url, &headers, body).expect("node 1 answers");
        (answer.code, answer.body)
    };
    let unauthorized_before = responses(&cluster, 1, 401);

    let body = forget_body("server-1", now_ms());
    let (code, reason) = post(&body, None);
    assert_eq!(code, 401, "{reason}");
    assert!(reason.contains("X-Raftlb-Auth"), "{reason}");
    let (code, reason) = post(&body, Some(wrong.sign_body(&body)));
    assert_eq!(code, 401, "{reason}");
    for off in [-60_000i64, 60_000] {
        let stale = forget_body("server-1", now_ms().saturating_add_signed(off));
        let (code, reason) = post(&stale, Some(keys.sign_body(&stale)));
        assert_eq!(code, 401, "at {off} ms off: {reason}");
        assert!(reason.contains("30 s"), "{reason}");
    }
    for bad in [
        &b"not json"[..],
        br#"{"server":"server-1"}"#,
        br#"{"server":"server-1","at":-5}"#,
        br#"{"server":"","at":1}"#,
        br#"{"server":"server-1","at":1,"also":true}"#,
    ] {
        let (code, reason) = post(bad, Some(keys.sign_body(bad)));
        assert_eq!(code, 400, "{}: {reason}", text(bad));
    }
    let unknown = forget_body("no-such-server", now_ms());
    let (code, reason) = post(&unknown, Some(keys.sign_body(&unknown)));
    assert_eq!(code, 404, "{reason}");
    let (code, reason) = post(&unknown, Some(keys.sign_body(&unknown)));
    assert_eq!(code, 401, "the same request twice: {reason}");
    assert!(reason.contains("already used"), "{reason}");
    let (code, _, _) = get(&url).expect("answered");
    assert_eq!(code, 405);

    // Nothing refused forgot anything, and every refusal was counted.
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..3 {
        assert_eq!(holds(&cluster, i, "server-1"), Some(true), "node {i}");
    }
    assert!(responses(&cluster, 1, 401) >= unauthorized_before + 5);
}

#[test]
fn a_server_dead_for_forget_after_is_removed_by_the_leader() {
    let _one = exclusive();
    let mut cluster = Cluster::start(Options {
        nodes: 3,
        workers: 2,
        node_args: vec!["--forget-after".into(), "2s".into()],
        ..Options::default()
    });
    cluster.wait_for_leader(SETTLE);
    cluster.wait_for_servers(&[true, true], SETTLE);
    cluster.kill_daemon(1);
    cluster.kill_worker(1);
    // Dead after --dead-after-ms (1 s), forgotten 2 s later.
    wait_until_every_node(&cluster, "server-2", false);
    // The live server is never forgotten.
    std::thread::sleep(Duration::from_secs(3));
    for i in 0..3 {
        assert_eq!(holds(&cluster, i, "server-1"), Some(true), "node {i}");
    }
}
