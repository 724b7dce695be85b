//! Membership changes on a running cluster, with real processes on loopback:
//! grow 3 -> 5 and shrink back under a stream of note writes and prime
//! lookups, remove the leader (asked through a follower, which forwards the
//! signed request), and replace a SIGKILLed node whose data dir is gone with a
//! new one. After each, every live member agrees on the note and the last
//! acknowledged write is there; `POST /admin/member`'s refusals are checked on
//! the way (bad tag 401, bad fields 400, unknown member 400).

mod support;

// Dropping datagrams to one node, in a network namespace of the test's own.
#[allow(dead_code)] // the chaos run uses the rest
#[path = "chaos/netfault.rs"]
mod netfault;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;
use support::membership::{cli, member, wait_for_voters};
use support::{exclusive, get, send, wait_for, Cluster, Options};

const SETTLE: Duration = Duration::from_secs(15);

/// Note writes (each a new value, to any node that takes it) and prime
/// lookups, from two threads, until stopped.
struct Load {
    urls: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    primes_ok: Arc<AtomicU64>,
    primes_failed: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(cluster: &Cluster) -> Load {
        let urls: Vec<String> = cluster.live().iter().map(|&i| cluster.url(i, "")).collect();
        let mut load = Load {
            urls: Arc::new(Mutex::new(urls)),
            stop: Arc::new(AtomicBool::new(false)),
            acked: Arc::new(Mutex::new(Vec::new())),
            primes_ok: Arc::new(AtomicU64::new(0)),
            primes_failed: Arc::new(AtomicU64::new(0)),
            threads: Vec::new(),
        };
        let (urls, stop, acked) = (load.urls.clone(), load.stop.clone(), load.acked.clone());
        load.threads.push(std::thread::spawn(move || {
            let agent = support::client(Duration::from_millis(500), Duration::from_secs(4));
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let value = format!("write {n}");
                let targets = urls.lock().expect("urls").clone();
                for url in targets {
                    let answer = agent
                        .put(&format!("{url}/note"))
                        .send(value.as_bytes())
                        .map(|r| r.status().as_u16());
                    if answer.is_ok_and(|code| code == 200) {
                        acked.lock().expect("acked").push(value.clone());
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }));
        let (urls, stop) = (load.urls.clone(), load.stop.clone());
        let (ok, failed) = (load.primes_ok.clone(), load.primes_failed.clone());
        load.threads.push(std::thread::spawn(move || {
            let agent = support::client(Duration::from_millis(500), Duration::from_secs(4));
            let mut k = 0usize;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                let targets = urls.lock().expect("urls").clone();
                let url = &targets[k % targets.len()];
                match agent.get(&format!("{url}/10000")).call() {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                std::thread::sleep(Duration::from_millis(10));
            }
        }));
        load
    }

    /// The nodes the load goes to from now on.
    fn set_targets(&self, cluster: &Cluster) {
        *self.urls.lock().expect("urls") =
            cluster.live().iter().map(|&i| cluster.url(i, "")).collect();
    }

    /// Stops the threads; returns the acknowledged writes in order.
    fn stop(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().expect("load thread");
        }
        let acked = self.acked.lock().expect("acked").clone();
        let (ok, failed) = (
            self.primes_ok.load(Ordering::Relaxed),
            self.primes_failed.load(Ordering::Relaxed),
        );
        eprintln!(
            "load: {} note writes acknowledged, primes {ok} ok / {failed} failed",
            acked.len()
        );
        acked
    }
}

/// Every live member holds the last acknowledged write (or a later one:
/// a write whose answer was lost may have committed after it).
fn check_last_write(cluster: &Cluster, acked: &[String]) {
    let last = acked.last().expect("some writes were acknowledged");
    let n = |v: &str| v.strip_prefix("write ").and_then(|d| d.parse::<u64>().ok());
    let floor = n(last).expect("a value the writer made");
    wait_for("the last acknowledged write everywhere", SETTLE, || {
        cluster
            .live()
            .iter()
            .all(|&i| {
                get(&cluster.url(i, "/note")).is_some_and(|(code, body, _)| {
                    code == 200 && n(&body).is_some_and(|v| v >= floor)
                })
            })
            .then_some(())
    });
}

#[test]
fn grow_3_to_5_shrink_back_and_remove_the_leader_under_load() {
    let _one = exclusive();
    let mut cluster = Cluster::start(Options {
        nodes: 3,
        workers: 1,
        ..Options::default()
    });
    let leader = cluster.wait_for_leader(SETTLE);
    wait_for_voters(&cluster, &["A", "B", "C"]);
    let load = Load::start(&cluster);

    // The refusals, before anything changes.
    let bad_tag = "00".repeat(32);
    let (code, body) = member(
        &cluster,
        leader,
        json!({"op":"remove","id":"C"}),
        Some(&bad_tag),
    );
    assert_eq!(code, 401, "{body}");
    let (code, body) = member(&cluster, leader, json!({"op":"grow","id":"C"}), None);
    assert!(code == 400 && body.contains("unknown op"), "{code} {body}");
    let (code, body) = member(&cluster, leader, json!({"op":"add","id":"F"}), None);
    assert!(code == 400 && body.contains("addr"), "{code} {body}");
    let (code, body) = member(&cluster, leader, json!({"op":"remove","id":"Z"}), None);
    assert!(
        code == 400 && body.contains("not a member"),
        "{code} {body}"
    );
    let (code, body) = member(
        &cluster,
        leader,
        json!({"op":"replace","id":"C","old":"C","addr":"127.0.0.1:1"}),
        None,
    );
    assert!(code == 400 && body.contains("same node"), "{code} {body}");

    // Grow: D, then E, each started with a nodes file naming it, then added.
    for id in ["D", "E"] {
        // The leader before the new node runs: until it is added, the new
        // node hears from nobody and names no leader.
        let leader = cluster.wait_for_leader(SETTLE);
        let i = cluster.add_node_slot(id);
        cluster.restart_node(i);
        let addr = cluster.node_addr(i);
        let started = Instant::now();
        let (code, body) = member(
            &cluster,
            leader,
            json!({"op":"add","id":id,"addr":addr}),
            None,
        );
        assert_eq!(code, 200, "{body}\n{}", cluster.logs());
        eprintln!("add {id}: {:?}, {}", started.elapsed(), body.trim());
        load.set_targets(&cluster);
    }
    wait_for_voters(&cluster, &["A", "B", "C", "D", "E"]);

    // Shrink: remove D and E (asked of a follower: it forwards to the leader).
    for i in [3, 4] {
        let leader = cluster.wait_for_leader(SETTLE);
        let via = (0..3).find(|&k| k != leader).expect("a follower");
        let id = cluster.ids[i].clone();
        let (code, body) = member(&cluster, via, json!({"op":"remove","id":id}), None);
        assert_eq!(code, 200, "{body}\n{}", cluster.logs());
        cluster.kill_node(i);
        load.set_targets(&cluster);
    }
    wait_for_voters(&cluster, &["A", "B", "C"]);

    // Remove the leader itself: it steps down once that commits; the other
    // two elect one of them and go on.
    let old = cluster.wait_for_leader(SETTLE);
    let old_id = cluster.ids[old].clone();
    let (code, body) = member(&cluster, old, json!({"op":"remove","id":old_id}), None);
    assert_eq!(code, 200, "{body}\n{}", cluster.logs());
    cluster.kill_node(old);
    load.set_targets(&cluster);
    let new = cluster.wait_for_leader(SETTLE);
    assert_ne!(new, old);
    let rest: Vec<&str> = ["A", "B", "C"]
        .into_iter()
        .filter(|&n| n != old_id)
        .collect();
    wait_for_voters(&cluster, &rest);
    std::thread::sleep(Duration::from_secs(1));
    let acked = load.stop();
    assert!(
        acked.len() > 20,
        "too few writes went through: {}",
        acked.len()
    );
    check_last_write(&cluster, &acked);
    // The two remaining voters still commit: one more write.
    let (code, _) = send("PUT", &cluster.url(new, "/note"), b"after").expect("answers");
    assert_eq!(code, 200);
}

#[test]
fn a_sigkilled_node_whose_disk_is_gone_is_replaced_by_a_new_one_under_load() {
    let _one = exclusive();
    let mut cluster = Cluster::start(Options {
        nodes: 3,
        workers: 1,
        ..Options::default()
    });
    let leader = cluster.wait_for_leader(SETTLE);
    let load = Load::start(&cluster);
    std::thread::sleep(Duration::from_secs(1));
    // C dies with its disk.
    let victim = (0..3).find(|&k| k != leader).expect("a follower");
    let victim_id = cluster.ids[victim].clone();
    cluster.kill_node(victim);
    std::fs::remove_dir_all(cluster.data_dir(victim)).expect("the disk is gone");
    load.set_targets(&cluster);
    // F, a new machine, takes its place.
    let f = cluster.add_node_slot("F");
    cluster.restart_node(f);
    let addr = cluster.node_addr(f);
    // Through the CLI, as an operator would: it finds the leader and the key.
    let started = Instant::now();
    let (code, out, err) = cli(&cluster, &["member", "replace", &victim_id, "F", &addr]);
    assert_eq!(code, Some(0), "{out}{err}\n{}", cluster.logs());
    eprintln!(
        "replace {victim_id} with F (raftlb member replace): {:?}, {}",
        started.elapsed(),
        out.trim()
    );
    load.set_targets(&cluster);
    let mut voters: Vec<&str> = ["A", "B", "C"]
        .into_iter()
        .filter(|&n| n != victim_id)
        .collect();
    voters.push("F");
    wait_for_voters(&cluster, &voters);
    let (code, listed, err) = cli(&cluster, &["member", "list"]);
    assert_eq!(code, Some(0), "{err}");
    let first = |l: &str| l.split_whitespace().next().map(str::to_string);
    assert!(
        listed
            .lines()
            .any(|l| l.contains("voter") && l.contains(" F ") || first(l).as_deref() == Some("F")),
        "{listed}"
    );
    assert!(
        !listed
            .lines()
            .any(|l| first(l).as_deref() == Some(victim_id.as_str())),
        "{listed}"
    );
    std::thread::sleep(Duration::from_secs(1));
    let acked = load.stop();
    assert!(
        acked.len() > 10,
        "too few writes went through: {}",
        acked.len()
    );
    check_last_write(&cluster, &acked);
    // F votes: with the leader gone, F and the other survivor elect one.
    let leader = cluster.wait_for_leader(SETTLE);
    cluster.kill_node(leader);
    let next = cluster.wait_for_leader(SETTLE);
    assert_ne!(next, leader);
    let (code, _) = send("PUT", &cluster.url(next, "/note"), b"after").expect("answers");
    assert_eq!(code, 200, "two of three voters, F among them, commit");
}

/// A note write through any live node, retried until `limit`: its status.
fn write_note(cluster: &Cluster, text: &str, limit: Duration) -> u16 {
    let start = Instant::now();
    loop {
        let codes: Vec<u16> = cluster
            .live()
            .iter()
            .filter_map(|&i| send("PUT", &cluster.url(i, "/note"), text.as_bytes()).map(|a| a.0))
            .collect();
        if codes.contains(&200) || start.elapsed() >= limit {
            return if codes.contains(&200) {
                200
            } else {
                codes.first().copied().unwrap_or(0)
            };
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Three nodes and a worker, a note written, and a second for the leader to
/// bind each member to the data dir it heard from (a configuration entry a
/// heartbeat or two after its first commit): the cluster and its leader.
fn three_nodes_bound() -> (Cluster, usize) {
    let cluster = Cluster::start(Options {
        nodes: 3,
        workers: 1,
        ..Options::default()
    });
    let leader = cluster.wait_for_leader(SETTLE);
    assert_eq!(write_note(&cluster, "before", SETTLE), 200);
    std::thread::sleep(Duration::from_secs(1));
    (cluster, leader)
}

#[test]
fn a_node_back_with_an_empty_data_dir_under_its_name_does_not_count_until_added_back() {
    let _one = exclusive();
    let (mut cluster, leader) = three_nodes_bound();
    let others: Vec<usize> = (0..3).filter(|&k| k != leader).collect();
    let (lost, other) = (others[0], others[1]);
    // `lost`'s disk is gone: it comes back empty, under its name.
    cluster.kill_node(lost);
    std::fs::remove_dir_all(cluster.data_dir(lost)).expect("the disk is gone");
    cluster.restart_node(lost);
    std::thread::sleep(Duration::from_secs(1));
    // With the third node down, the leader and the empty node are no
    // majority: the empty node forgot what it acknowledged and voted.
    cluster.kill_node(other);
    let code = write_note(&cluster, "with the empty node", Duration::from_secs(4));
    assert_eq!(
        code,
        503,
        "a majority counted a node that lost its disk\n{}",
        cluster.logs()
    );
    // Back to a majority of real disks; the empty node is removed and added
    // back, as a new incarnation: then it counts again.
    cluster.restart_node(other);
    assert_eq!(write_note(&cluster, "others back", SETTLE), 200);
    let via = cluster.wait_for_leader(SETTLE);
    let id = cluster.ids[lost].clone();
    let (code, body) = member(&cluster, via, json!({"op":"remove","id":id}), None);
    assert_eq!(code, 200, "{body}");
    // (The empty node may have led: it can, with the others' votes, though
    // it never counts itself. Ask whoever leads now, never it.)
    let via = wait_for("a leader other than the removed node", SETTLE, || {
        let s = cluster.status(other)?;
        let l = cluster
            .ids
            .iter()
            .position(|x| Some(x) == s.leader.as_ref())?;
        (l != lost).then_some(l)
    });
    let addr = cluster.node_addr(lost);
    let (code, body) = member(&cluster, via, json!({"op":"add","id":id,"addr":addr}), None);
    assert_eq!(code, 200, "{body}\n{}", cluster.logs());
    std::thread::sleep(Duration::from_secs(1));
    let survivor = (0..3)
        .find(|&k| k != lost && k != via)
        .expect("a third node");
    let stop = if via == other { via } else { survivor };
    cluster.kill_node(stop);
    assert_eq!(
        write_note(&cluster, "added back", SETTLE),
        200,
        "the node added back counts again\n{}",
        cluster.logs()
    );
}

/// A leader asked to remove itself that stops leading before it hears that
/// the removal committed (here: it hears no one, so CheckQuorum steps it
/// down) is no member any more, and no one sends it the outcome: it answers
/// 503 at once, not after the 50 s wait (chaos seed 1301 waited for it).
#[test]
fn a_leader_that_steps_down_before_its_removal_commits_answers_at_once() {
    let _one = exclusive();
    let net = match netfault::NetFaults::enter() {
        Ok(net) => net,
        Err(why) => {
            eprintln!("skipped: cannot drop datagrams here: {why}");
            return;
        }
    };
    let (cluster, leader) = three_nodes_bound();
    net.deafen(cluster.ports[leader]).expect("a drop rule");
    let id = cluster.ids[leader].clone();
    let started = Instant::now();
    let (code, body) = member(&cluster, leader, json!({"op":"remove","id":id}), None);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "answered after {took:?}: {code} {body}\n{}",
        cluster.logs()
    );
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("whether its removal committed"), "{body}");
    // The other two committed it: the configuration without the old leader.
    let others: Vec<usize> = (0..3).filter(|&k| k != leader).collect();
    let mut want: Vec<String> = others.iter().map(|&k| cluster.ids[k].clone()).collect();
    want.sort();
    wait_for("the others without the old leader", SETTLE, || {
        others
            .iter()
            .all(|&k| {
                support::membership::configuration(&cluster, k).is_some_and(|c| {
                    let mut names: Vec<String> = c.into_iter().map(|(n, _)| n).collect();
                    names.sort();
                    names == want
                })
            })
            .then_some(())
    });
}

#[test]
fn a_node_back_after_a_replace_follows_a_leader_its_nodes_file_does_not_name() {
    // A chaos run found it: B, down while another node was replaced by F,
    // restarted with its old nodes file and log while F led. Its UDP door
    // admits only the nodes it knows, so it dropped F's heartbeats and stayed
    // without a leader for good. A member it still knows now names F to it.
    let _one = exclusive();
    let (mut cluster, leader) = three_nodes_bound();
    let away = (0..3).find(|&k| k != leader).expect("a follower");
    let replaced = (0..3)
        .find(|&k| k != leader && k != away)
        .expect("the other follower");
    let (away_id, replaced_id) = (cluster.ids[away].clone(), cluster.ids[replaced].clone());
    cluster.kill_node(away);
    let f = cluster.add_node_slot("F");
    cluster.restart_node(f);
    let addr = cluster.node_addr(f);
    // Added, then the other follower removed (a replace would remove first,
    // and with B down, two voters of three could not promote F).
    for args in [
        &["member", "add", "F", &addr][..],
        &["member", "remove", &replaced_id],
    ] {
        let (code, out, err) = cli(&cluster, args);
        assert_eq!(code, Some(0), "{args:?}: {out}{err}\n{}", cluster.logs());
    }
    cluster.stop_node(replaced, Duration::from_secs(5));
    let leader_id = cluster.ids[leader].clone();
    wait_for_voters(&cluster, &[leader_id.as_str(), away_id.as_str(), "F"]);
    // F leads: the old leader hands over on SIGTERM (F is the only other
    // live voter) and comes back as a follower.
    cluster.stop_node(leader, Duration::from_secs(5));
    assert_eq!(cluster.wait_for_leader(SETTLE), f, "{}", cluster.logs());
    cluster.restart_node(leader);
    assert_eq!(cluster.wait_for_leader(SETTLE), f);
    // B comes back knowing A, B and C only.
    cluster.restart_node(away);
    wait_for("the node back to follow F", SETTLE, || {
        (cluster.status(away)?.leader.as_deref() == Some("F")).then_some(())
    });
    wait_for_voters(&cluster, &[leader_id.as_str(), away_id.as_str(), "F"]);
    assert_eq!(write_note(&cluster, "after", SETTLE), 200);
}
