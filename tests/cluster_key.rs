//! The cluster key against real processes: a node without a key does not
//! start, `--insecure` says so, reports need the tag of their body, datagrams
//! forged from a dead node's address (unsigned, or signed with another key)
//! change nothing and are counted with reason `auth`, a datagram seen twice is
//! dropped with reason `replay`, and a key rotation done one node at a time
//! keeps the cluster committing.

mod support;

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use raftlb::auth::frame::{self, Header};
use raftlb::auth::{Auth, Key, Keys, KEY_BYTES};
use raftlb::raft::{Message, MessageBody};
use raftlb::wire::{self, Datagram};
use support::{exclusive, get, post_with, wait_for, Cluster, Options, NODE};

const SETTLE: Duration = Duration::from_secs(10);

/// A counter or gauge of node i's `/metrics`, the whole name with labels.
fn metric(cluster: &Cluster, i: usize, name: &str) -> Option<u64> {
    let (_, text, _) = get(&cluster.url(i, "/metrics"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn dropped(cluster: &Cluster, i: usize, reason: &str) -> u64 {
    let name = format!("raftlb_datagrams_dropped_by_reason_total{{reason=\"{reason}\"}}");
    metric(cluster, i, &name).unwrap_or_else(|| panic!("node {i} has no {name}"))
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

#[test]
fn a_node_without_a_key_exits_2_saying_how_to_make_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let nodes = dir.path().join("nodes.txt");
    std::fs::write(&nodes, format!("A 127.0.0.1:{}\n", support::free_port())).expect("write");
    let run = |extra: &[&str]| {
        let out = Command::new(NODE)
            .args(["--id", "A", "--nodes"])
            .arg(&nodes)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(extra)
            .output()
            .expect("run raftlb-node");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("raftlb keygen") && err.contains("cluster.key"),
        "{err}"
    );
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, "0123\n").expect("write");
    let (code, err) = run(&["--key", bad.to_str().expect("utf-8")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("bad.key") && err.contains("raftlb keygen"),
        "{err}"
    );
    let (code, err) = run(&["--insecure", "--key", bad.to_str().expect("utf-8")]);
    assert_eq!(code, Some(2), "--insecure and --key together: {err}");
}

#[test]
fn an_insecure_node_says_so_in_status_and_takes_unsigned_reports() {
    let _one = exclusive();
    let mut cluster = Cluster::start(Options {
        nodes: 0,
        workers: 0,
        ..Options::default()
    });
    // One node of its own, insecure (the harness's cluster has none yet).
    let port = support::free_port();
    std::fs::write(cluster.path("nodes.txt"), format!("A 127.0.0.1:{port}\n")).expect("write");
    cluster.ids = vec!["A".into()];
    cluster.ports = vec![port];
    cluster.node_key_args = vec!["--insecure".into()];
    let node = cluster.spawn_node(0);
    cluster.nodes.push(Some(node));
    cluster.wait_for_leader(SETTLE);
    let status = cluster.status(0).expect("status");
    assert!(status.insecure);
    let log = std::fs::read_to_string(cluster.path("node-A.1.log")).expect("the node's log");
    assert!(log.contains("--insecure") && log.contains("WARN"), "{log}");
    let body = br#"{"server":"s","url":"http://127.0.0.1:9","cpu":1,"seq":1}"#;
    let answer = post_with(&cluster.url(0, "/report"), &[], body).expect("answers");
    assert_eq!(answer.code, 202, "{}", answer.body);
}

#[test]
fn reports_need_the_tag_of_their_body() {
    let _one = exclusive();
    let cluster = Cluster::start(Options {
        nodes: 3,
        workers: 0,
        ..Options::default()
    });
    cluster.wait_for_leader(SETTLE);
    assert!(!cluster.status(0).expect("status").insecure);
    let url = cluster.url(1, "/report");
    let body =
        br#"{"server":"forged","url":"http://127.0.0.1:9","cpu":0,"seq":18446744073709551615}"#;
    let other = Keys::new(Key::from_bytes([7; KEY_BYTES]), None).sign_body(body);
    let of_another_body = cluster.keys().sign_body(b"{}");
    let header = raftlb::auth::AUTH_HEADER;
    let attempts: [&[(&str, &str)]; 5] = [
        &[],
        &[(header, "")],
        &[(header, "zz")],
        &[(header, &other)],
        &[(header, &of_another_body)],
    ];
    for headers in attempts {
        let answer = post_with(&url, headers, body).expect("answers");
        assert_eq!(answer.code, 401, "{headers:?}: {}", answer.body);
        assert_eq!(answer.body.trim_end().lines().count(), 1, "{}", answer.body);
    }
    let counted = metric(&cluster, 1, "raftlb_http_responses_total{code=\"401\"}");
    assert_eq!(counted, Some(5));
    // A signed report goes through; the forged one never reached the table.
    cluster.report_until_applied(1, "genuine", SETTLE);
    for i in 0..3 {
        let servers = cluster.status(i).expect("status").servers;
        assert!(servers.iter().all(|s| s.id != "forged"), "{servers:?}");
    }
}

/// A Heartbeat from node `from` (Raft id) to `to` with a term far ahead: obeyed,
/// it would make `to` a follower of `from` in that term.
fn heartbeat(from: u64, to: u64, term: u64) -> Vec<u8> {
    wire::encode_datagram(&Datagram::Raft(Message {
        from,
        incarnation: 1,
        to,
        term,
        body: MessageBody::Heartbeat {
            commit: 0,
            read_seq: 0,
        },
    }))
    .expect("a heartbeat fits")
}

#[test]
fn forged_datagrams_from_a_dead_nodes_address_change_nothing_and_count_as_auth() {
    let _one = exclusive();
    let mut cluster = Cluster::start(Options {
        workers: 0,
        ..Options::default()
    });
    let leader = cluster.wait_for_leader(SETTLE);
    let term = cluster.status(leader).expect("status").term;
    let victim = (leader + 1) % 5;
    cluster.kill_node(victim);
    let socket =
        UdpSocket::bind(("127.0.0.1", cluster.ports[victim])).expect("bind the dead node's port");
    let targets: Vec<usize> = cluster.live();
    let before: Vec<u64> = targets
        .iter()
        .map(|i| dropped(&cluster, *i, "auth"))
        .collect();
    let other_key = Auth::Keyed(Keys::new(Key::from_bytes([9; KEY_BYTES]), None));
    let id = |i: usize| raftlb::nodes::node_id(&cluster.ids[i]);
    let from = id(victim);
    let rounds = 20u64;
    for k in 0..rounds {
        for &i in &targets {
            let to = id(i);
            let payload = heartbeat(from, to, term + 1000 + k);
            let header = Header {
                epoch: now_us(),
                counter: k,
            };
            let forgeries = [
                payload.clone(),
                frame::seal(&Auth::Insecure, from, to, header, &payload),
                frame::seal(&other_key, from, to, header, &payload),
            ];
            for bytes in forgeries {
                socket
                    .send_to(&bytes, ("127.0.0.1", cluster.ports[i]))
                    .expect("send");
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Had one been believed, terms would have jumped by a thousand.
    std::thread::sleep(Duration::from_millis(500));
    for &i in &targets {
        let status = cluster.status(i).expect("status");
        assert_eq!(status.term, term, "node {i}");
        assert_eq!(
            status.leader.as_deref(),
            Some(cluster.ids[leader].as_str()),
            "node {i}"
        );
    }
    for (n, &i) in targets.iter().enumerate() {
        let want = before[n] + 3 * rounds;
        wait_for("forgeries counted as auth", SETTLE, || {
            (dropped(&cluster, i, "auth") >= want).then_some(())
        });
    }
    drop(socket);
}

#[test]
fn a_datagram_seen_twice_or_from_an_older_epoch_is_dropped_as_a_replay() {
    let _one = exclusive();
    let mut cluster = Cluster::start(Options {
        workers: 0,
        ..Options::default()
    });
    let leader = cluster.wait_for_leader(SETTLE);
    let victim = (leader + 1) % 5;
    let target = (leader + 2) % 5;
    cluster.kill_node(victim);
    let socket =
        UdpSocket::bind(("127.0.0.1", cluster.ports[victim])).expect("bind the dead node's port");
    // A valid datagram of the victim's, as the cluster key makes it: a refusal
    // of a note request nobody made, which the target ignores.
    let keyed = Auth::Keyed(cluster.keys());
    let id = |i: usize| raftlb::nodes::node_id(&cluster.ids[i]);
    let (from, to) = (id(victim), id(target));
    let payload = wire::encode_datagram(&Datagram::NoteRefused {
        from,
        request: u64::MAX,
    })
    .expect("fits");
    let epoch = now_us();
    let valid = frame::seal(&keyed, from, to, Header { epoch, counter: 5 }, &payload);
    let older = Header {
        epoch: epoch - 1,
        counter: 6,
    };
    let of_older_epoch = frame::seal(&keyed, from, to, older, &payload);
    let total = |c: &Cluster| metric(c, target, "raftlb_datagrams_dropped_total").expect("total");
    let (replays, auth, all) = (
        dropped(&cluster, target, "replay"),
        dropped(&cluster, target, "auth"),
        total(&cluster),
    );
    let to_addr = ("127.0.0.1", cluster.ports[target]);
    for bytes in [&valid, &valid, &of_older_epoch] {
        socket.send_to(bytes, to_addr).expect("send");
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for("two replays counted", SETTLE, || {
        (dropped(&cluster, target, "replay") >= replays + 2).then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(dropped(&cluster, target, "replay"), replays + 2);
    assert_eq!(
        dropped(&cluster, target, "auth"),
        auth,
        "the first one was authentic"
    );
    assert_eq!(total(&cluster), all + 2, "the first one was accepted");
}

#[test]
fn a_key_rotation_one_node_at_a_time_keeps_the_cluster_committing() {
    let _one = exclusive();
    let mut cluster = Cluster::start(Options {
        workers: 0,
        ..Options::default()
    });
    cluster.wait_for_leader(SETTLE);
    let old = cluster.key_file();
    let new = cluster.path("new.key").display().to_string();
    let output = Command::new(support::CLIENT)
        .args(["keygen", &new])
        .output()
        .expect("run raftlb keygen");
    assert_eq!(output.status.code(), Some(0));
    // Step 1: every node learns to accept the new key, still signing with the
    // old; step 2: every node signs with the new one, still accepting the old.
    // Reports are signed with the old key, which every node accepts throughout.
    let steps = [[&old, &new], [&new, &old]];
    let started = Instant::now();
    for (step, [key, previous]) in steps.iter().enumerate() {
        cluster.node_key_args = vec![
            "--key".into(),
            key.to_string(),
            "--previous-key".into(),
            previous.to_string(),
        ];
        for i in 0..5 {
            let mut node = cluster.nodes[i].take().expect("running");
            node.signal("TERM");
            assert_eq!(node.wait_exit(SETTLE), Some(0));
            drop(node);
            cluster.restart_node(i);
            cluster.wait_for_leader(SETTLE);
            // Every node, the restarted ones and the others, applies it.
            cluster.report_until_applied(i, &format!("step{step}-node{i}"), SETTLE);
        }
    }
    assert!(started.elapsed() < Duration::from_secs(120));
}

#[test]
fn raftlb_keygen_writes_a_key_once_and_never_over_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cluster.key");
    let keygen = || {
        Command::new(support::CLIENT)
            .arg("keygen")
            .arg(&path)
            .output()
            .expect("run raftlb keygen")
    };
    let first = keygen();
    assert_eq!(first.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&first.stdout).contains("cluster.key"));
    let key = std::fs::read(&path).expect("written");
    let second = keygen();
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("cluster.key") && err.contains("exists"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&path).expect("still there"),
        key,
        "not overwritten"
    );
}
