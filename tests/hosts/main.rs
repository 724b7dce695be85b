//! The cluster across hosts: five nodes, three workers and three daemons, each
//! in a network namespace of its own with its own address on a bridge the test
//! makes (`net.rs`), reached from the machine's namespace as a user would. It
//! proves what one loopback address cannot: that every program binds and sends
//! from the address it was given (nothing on 127.0.0.1), and that Raft keeps
//! one leader per term and every acknowledged write under faults of single
//! links: one-way drop and loss, a leader nobody hears while it hears them,
//! a node cut off from the leader alone, links that flap. `membership.rs`
//! changes the members while clients run: a dead host replaced by a new one,
//! growing and shrinking, the leader removed.
//!
//! Needs root, `ip` and `nft` (`make chaos-deps`); without them each test
//! prints "skipped: <why>" and passes.

#[path = "../support/mod.rs"]
mod support;

mod cluster;
mod load;
mod membership;
mod net;
mod sockets;
mod watch;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cluster::{server_id, HostCluster, NODE_IDS, SERVERS};
use load::Clients;
use net::{Link, Unavailable};
use support::wait_for;
use watch::Watch;

/// Bound on every wait for the cluster to come up or settle.
const SETTLE: Duration = Duration::from_secs(15);
/// How long a fault holds.
const FAULT_HOLD: Duration = Duration::from_secs(3);
/// How long a majority may go without an agreed leader under a fault: a few
/// election timeouts (150-300 ms) on a busy two-core machine.
const LEADER_BOUND: Duration = Duration::from_secs(6);
/// Bound on the observer's rounds, besides the stop flag.
const OBSERVE_ROUNDS_MAX: u32 = 2_000;

/// The cluster on hosts `started` (`HostCluster::start` or `start_with`), or
/// None after saying why this machine cannot make hosts.
fn start_or_skip(started: Result<HostCluster, Unavailable>) -> Option<HostCluster> {
    match started {
        Ok(cluster) => Some(cluster),
        Err(Unavailable(why)) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}

#[test]
fn cluster_on_hosts_serves_the_machine_and_binds_only_its_hosts_addresses() {
    let _one = support::exclusive();
    let Some(mut cluster) = start_or_skip(HostCluster::start()) else {
        return;
    };
    let leader = wait_for("a leader all five nodes name", SETTLE, || {
        cluster.agreed_leader()
    });
    wait_for(
        "every server alive on every node, at its host's address",
        SETTLE,
        || {
            NODE_IDS
                .iter()
                .all(|id| {
                    cluster.status(id).is_some_and(|s| {
                        (0..SERVERS).all(|i| {
                            // The worker's host's address, as its daemon reports it.
                            let ip = cluster.net.host(&format!("worker-{}", i + 1)).ip;
                            let url = cluster.inner.worker_url(i);
                            assert!(url.starts_with(&format!("http://{ip}:")), "{url}");
                            s.servers
                                .iter()
                                .any(|sv| sv.id == server_id(i) && sv.alive && sv.url == url)
                        })
                    })
                })
                .then_some(())
        },
    );
    let others: Vec<&str> = NODE_IDS.into_iter().filter(|id| *id != leader).collect();

    // A prime through a follower's address, from the machine's namespace.
    let (code, body, server) =
        support::get(&cluster.url(others[0], "/10000")).expect("node answers a prime");
    assert_eq!((code, body.as_str()), (200, "104729"));
    assert!(server.is_some_and(|s| s.starts_with("server-")));

    // A note written through one follower (forwarded to the leader over the
    // bridge) and read through another.
    let note = "written across hosts";
    let put = support::send("PUT", &cluster.url(others[1], "/note"), note.as_bytes());
    assert_eq!(put.map(|a| a.0), Some(200), "PUT /note via {}", others[1]);
    let got = support::get(&cluster.url(others[2], "/note")).expect("node answers /note");
    assert_eq!((got.0, got.1.as_str()), (200, note));

    // The CLI with the hosts' nodes file, as a user runs it.
    let cli = |args: &[&str]| {
        let (code, out, _) = support::membership::cli(&cluster.inner, args);
        (code, out)
    };
    assert_eq!(cli(&["prime", "10000"]), (Some(0), "104729\n".to_string()));
    let (code, text) = cli(&["status"]);
    assert_eq!(code, Some(0), "raftlb status:\n{text}");
    assert!(
        text.contains(&cluster.addr(&leader)),
        "raftlb status:\n{text}"
    );

    cluster.assert_sockets_on_their_hosts();
    assert_eq!(cluster.exited(), Vec::<String>::new());
}

#[test]
fn per_link_faults_keep_one_leader_per_term_and_every_acknowledged_write() {
    let _one = support::exclusive();
    let Some(mut cluster) = start_or_skip(HostCluster::start()) else {
        return;
    };
    let started = Instant::now();
    let watch = Watch::new(&cluster);
    let leader = watch.await_majority_leader(None, SETTLE);
    assert!(leader.is_some(), "no leader within {SETTLE:?}");
    let clients = Clients::new(&cluster, &cluster.live_ids());
    let (history, tally) = std::thread::scope(|s| {
        let observer = s.spawn(|| watch.observe(&clients.stop, OBSERVE_ROUNDS_MAX));
        let load = load::under_load(&clients, NODE_IDS.len(), false, || {
            run_faults(&cluster, &watch, &clients)
        });
        observer.join().expect("observer thread");
        load
    });
    let (final_value, history) =
        load::final_reads(&cluster, &clients, &cluster.live_ids(), history);
    let (answers, terms) = watch.seen();
    eprintln!(
        "hosts: {} acknowledged writes, {} of unknown outcome, {} reads; {answers} (term, leader) answers over {terms} terms; {:.1} s",
        tally.ok_writes,
        tally.unknown_writes,
        tally.reads,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        watch.violations(),
        Vec::<String>::new(),
        "one leader per term"
    );
    load::assert_history(&tally, history, &final_value);
    assert_eq!(cluster.exited(), Vec::<String>::new());
}

/// The nodes other than `leader`, in order.
fn followers(leader: &str) -> Vec<String> {
    NODE_IDS
        .iter()
        .filter(|id| **id != leader)
        .map(|id| id.to_string())
        .collect()
}

/// How a phase's links fail.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// Set before the phase and held for all of it.
    Held,
    /// Down and up every 200 ms while the phase holds.
    Flapping,
}

/// Each fault in turn on the links of whoever leads then, healed before the next.
fn run_faults(cluster: &HostCluster, watch: &Watch, clients: &Clients) {
    let net = &cluster.net;
    let phase = |name: &str, links: &[Link], fault: Fault, unseated: Option<&str>| {
        fault_phase(cluster, watch, clients, name, links, fault, unseated)
    };
    // One way: the leader no longer hears one follower (its answers, its
    // forwarded writes), and loses half of what it sends to another.
    let leader = current_leader(watch);
    let f = followers(&leader);
    let links = [net.link(&f[0], &leader), net.link(&leader, &f[1])];
    links[0].drop_all();
    links[1].loss(50);
    phase("one-way drop and loss", &links, Fault::Held, None);

    // Asymmetric: the leader hears everyone, nobody hears the leader. The
    // others must elect another; the old one must follow it.
    let leader = current_leader(watch);
    let links: Vec<Link> = followers(&leader)
        .iter()
        .map(|f| net.link(&leader, f))
        .collect();
    links.iter().for_each(Link::drop_all);
    let name = "asymmetric: the leader hears all, nobody hears it";
    phase(name, &links, Fault::Held, Some(&leader));

    // One node cut off from the leader (both ways) but not from the others:
    // the rest still hear the leader, and a majority must name one.
    let leader = current_leader(watch);
    let cut = &followers(&leader)[0];
    let links = [net.link(&leader, cut), net.link(cut, &leader)];
    links.iter().for_each(Link::drop_all);
    phase(
        "a follower cut off from the leader alone",
        &links,
        Fault::Held,
        None,
    );

    // Flapping: the leader's links to two followers, both ways.
    let leader = current_leader(watch);
    let f = followers(&leader);
    let links = [
        net.link(&leader, &f[0]),
        net.link(&f[0], &leader),
        net.link(&leader, &f[1]),
        net.link(&f[1], &leader),
    ];
    phase("flapping links", &links, Fault::Flapping, None);
}

/// The leader a majority names, within [`SETTLE`].
fn current_leader(watch: &Watch) -> String {
    let found = watch.await_majority_leader(None, SETTLE);
    found
        .unwrap_or_else(|| panic!("no leader a majority names within {SETTLE:?}"))
        .0
}

/// Holds `fault` on `links` for [`FAULT_HOLD`]. Meanwhile a majority must name
/// one leader within [`LEADER_BOUND`] (another than `unseated` when given) and
/// writes through the nodes must be acknowledged; every link must have dropped
/// something. Then every fault is healed, and all five nodes must name one
/// leader and a write must be acknowledged within [`SETTLE`].
fn fault_phase(
    cluster: &HostCluster,
    watch: &Watch,
    clients: &Clients,
    name: &str,
    links: &[Link],
    fault: Fault,
    unseated: Option<&str>,
) {
    let acked_before = clients.acked_writes.load(Ordering::Relaxed);
    let start = Instant::now();
    let (during, flapped) = std::thread::scope(|s| {
        let flapper = (fault == Fault::Flapping).then(|| s.spawn(|| flap(links)));
        let during = watch.await_majority_leader(unseated, LEADER_BOUND);
        let elected_after = start.elapsed();
        if let Some(left) = FAULT_HOLD.checked_sub(start.elapsed()) {
            std::thread::sleep(left);
        }
        let flapped = flapper.map(|f| f.join().expect("flapping thread"));
        (during.map(|d| (d, elected_after)), flapped)
    });
    let ((leader, term), elected_after) = during.unwrap_or_else(|| {
        let other = unseated.map(|u| format!(" other than {u}"));
        panic!(
            "{name}: no leader a majority names{} within {LEADER_BOUND:?}",
            other.unwrap_or_default()
        )
    });
    let acked_during = clients.acked_writes.load(Ordering::Relaxed) - acked_before;
    let dropped: Vec<u64> = match flapped {
        Some(counts) => counts,
        None => links.iter().map(Link::dropped).collect(),
    };
    for (link, count) in links.iter().zip(&dropped) {
        assert!(
            *count > 0,
            "{name}: {} dropped nothing: the fault did not take",
            link.describe()
        );
    }
    assert!(acked_during > 0, "{name}: no write acknowledged in {FAULT_HOLD:?} under the fault, with a leader named by a majority");
    cluster.net.heal_all();
    let healed = Instant::now();
    let agreed = wait_for(
        &format!("{name}: all five to name one leader after healing"),
        SETTLE,
        || watch.agreed_by_all(),
    );
    let acked_healed = clients.acked_writes.load(Ordering::Relaxed);
    wait_for(
        &format!("{name}: a write acknowledged after healing"),
        SETTLE,
        || (clients.acked_writes.load(Ordering::Relaxed) > acked_healed).then_some(()),
    );
    let links: Vec<String> = links.iter().map(Link::describe).collect();
    eprintln!(
        "hosts: {name} ({}; packets dropped {dropped:?}): leader {leader} (term {term}) named by a \
         majority after {:.2} s, {acked_during} writes acknowledged under the fault; healed, all \
         five name {agreed} within {:.2} s",
        links.join(", "),
        elected_after.as_secs_f64(),
        healed.elapsed().as_secs_f64()
    );
}

/// Takes `links` down and up every 200 ms for [`FAULT_HOLD`] (at most 30
/// times), ending up; how many packets each dropped in all.
fn flap(links: &[Link]) -> Vec<u64> {
    let start = Instant::now();
    let mut dropped = vec![0; links.len()];
    for _ in 0..30 {
        if start.elapsed() >= FAULT_HOLD {
            break;
        }
        links.iter().for_each(Link::drop_all);
        std::thread::sleep(Duration::from_millis(200));
        for (count, link) in dropped.iter_mut().zip(links) {
            *count += link.dropped();
        }
        links.iter().for_each(Link::heal);
        std::thread::sleep(Duration::from_millis(200));
    }
    dropped
}
