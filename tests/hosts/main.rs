//! The cluster across hosts: five nodes, three workers and three daemons, each
//! in a network namespace of its own with its own address on a bridge the test
//! makes (`net.rs`), reached from the machine's namespace as a user would. It
//! proves what one loopback address cannot: that every program binds and sends
//! from the address it was given (nothing on 127.0.0.1), and that Raft keeps
//! one leader per term and every acknowledged write under faults of single
//! links: one-way drop and loss, a leader nobody hears while it hears them,
//! a node cut off from the leader alone, links that flap.
//!
//! Needs root, `ip` and `nft` (`make chaos-deps`); without them each test
//! prints "skipped: <why>" and passes. Both tests together take about 20 s.

#[path = "../support/mod.rs"]
mod support;

mod cluster;
mod net;
mod sockets;
mod watch;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use raftlb::lincheck::{check_register, lost_writes, Op, Verdict};

use cluster::{server_id, HostCluster, NODE_IDS, SERVERS};
use net::Link;
use support::history::{NoteClient, Outcome, Tally};
use support::wait_for;
use watch::Watch;

/// Bound on every wait for the cluster to come up or settle.
const SETTLE: Duration = Duration::from_secs(15);
/// How long a fault holds.
const FAULT_HOLD: Duration = Duration::from_secs(3);
/// How long a majority may go without an agreed leader under a fault: a few
/// election timeouts (150-300 ms) on a busy two-core machine.
const LEADER_BOUND: Duration = Duration::from_secs(6);
/// Bounds on the clients' loops, besides the stop flag.
const CLIENT_OPS_MAX: usize = 5_000;
const OBSERVE_ROUNDS_MAX: u32 = 2_000;

/// The cluster on hosts, or None after saying why this machine cannot.
fn start_or_skip() -> Option<HostCluster> {
    match HostCluster::start() {
        Ok(cluster) => Some(cluster),
        Err(net::Unavailable(why)) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}

#[test]
fn cluster_on_hosts_serves_the_machine_and_binds_only_its_hosts_addresses() {
    let _one = support::exclusive();
    let Some(mut cluster) = start_or_skip() else {
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
        let out = std::process::Command::new(support::CLIENT)
            .args(["--nodes", &cluster.nodes_file()])
            .args(args)
            .output()
            .expect("run raftlb");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert_eq!(cli(&["prime", "10000"]), (Some(0), "104729\n".to_string()));
    let (code, text) = cli(&["status"]);
    assert_eq!(code, Some(0), "raftlb status:\n{text}");
    assert!(
        text.contains(&cluster.addr(&leader)),
        "raftlb status:\n{text}"
    );

    // Every socket in every host is on that host's address: none on loopback,
    // none on a wildcard, and each node listens on its nodes.txt address.
    for (proc, host) in cluster.procs() {
        let sockets = sockets::of(proc.pid());
        let wrong: Vec<_> = sockets.iter().filter(|s| !s.is_on(host.ip)).collect();
        assert!(
            wrong.is_empty(),
            "{} on host {} ({}) has sockets elsewhere: {wrong:?}",
            proc.name,
            host.name,
            host.ip
        );
        if NODE_IDS.contains(&host.name.as_str()) {
            let addr = cluster.addr(&host.name);
            for udp in [false, true] {
                assert!(
                    sockets
                        .iter()
                        .any(|s| s.listens(udp) && format!("{}:{}", s.ip, s.port) == addr),
                    "node {} does not listen on {addr} ({}): {sockets:?}",
                    host.name,
                    if udp { "udp" } else { "tcp" }
                );
            }
        }
    }
    assert_eq!(cluster.exited(), Vec::<String>::new());
}

/// What the clients saw and did, shared with the fault phases.
struct Clients {
    origin: Instant,
    acked_writes: AtomicUsize,
    stop: AtomicBool,
}

#[test]
fn per_link_faults_keep_one_leader_per_term_and_every_acknowledged_write() {
    let _one = support::exclusive();
    let Some(mut cluster) = start_or_skip() else {
        return;
    };
    let started = Instant::now();
    let watch = Watch::new(&cluster);
    let leader = watch.await_majority_leader(None, SETTLE);
    assert!(leader.is_some(), "no leader within {SETTLE:?}");
    let clients = Clients {
        origin: Instant::now(),
        acked_writes: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    };
    let (cluster_ref, clients_ref) = (&cluster, &clients);
    let (history, tally, faults) = std::thread::scope(|s| {
        let observer = s.spawn(|| watch.observe(&clients.stop, OBSERVE_ROUNDS_MAX));
        let writers: Vec<_> = (0..NODE_IDS.len())
            .map(|node| s.spawn(move || write_loop(cluster_ref, clients_ref, node)))
            .collect();
        let reader = s.spawn(|| read_loop(cluster_ref, clients_ref));
        let faults = std::panic::catch_unwind(AssertUnwindSafe(|| {
            run_faults(cluster_ref, &watch, clients_ref)
        }));
        clients.stop.store(true, Ordering::Relaxed);
        let (mut history, mut tally) = reader.join().expect("reader thread");
        for writer in writers {
            let (writes, write_tally) = writer.join().expect("writer thread");
            history.extend(writes);
            tally.add(write_tally);
        }
        observer.join().expect("observer thread");
        (history, tally, faults)
    });
    if let Err(panic) = faults {
        std::panic::resume_unwind(panic);
    }
    let (final_value, mut history) = final_reads(&cluster, &clients, history);
    history.sort_by_key(|op| op.invoked_ns);
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
    assert_eq!(
        tally.unexpected,
        Vec::<String>::new(),
        "answers outside the contract"
    );
    assert!(
        tally.ok_writes >= 20,
        "too few writes acknowledged to judge: {tally:?}"
    );
    let lost: Vec<&Op> = lost_writes(&history, &final_value)
        .iter()
        .map(|i| &history[*i])
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged writes lost (the note ends at {final_value:?}): {lost:?}"
    );
    match check_register("", &history).expect("the check finishes") {
        Verdict::Linearizable { .. } => {}
        Verdict::NotLinearizable { explanation } => {
            panic!("the note's history is not linearizable: {explanation}")
        }
    }
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

/// Writes unique values (`A0`, `A1`, ...) through node `NODE_IDS[node]`, 20 ms
/// apart, until told to stop. One writer per node, so that writes through the
/// nodes a fault spares go on while those through the others wait out their
/// 3 s deadline.
fn write_loop(cluster: &HostCluster, clients: &Clients, node: usize) -> (Vec<Op>, Tally) {
    let id = NODE_IDS[node];
    let client = NoteClient::new(10 + node, clients.origin, Duration::from_secs(4));
    let (mut history, mut tally) = (Vec::new(), Tally::default());
    let url = cluster.url(id, "/note");
    for n in 0..CLIENT_OPS_MAX {
        if clients.stop.load(Ordering::Relaxed) {
            break;
        }
        let outcome = client.write(&url, format!("{id}{n}"), &mut tally.unexpected);
        if let Outcome::Recorded(Op {
            returned_ns: Some(_),
            ..
        }) = &outcome
        {
            clients.acked_writes.fetch_add(1, Ordering::Relaxed);
        }
        tally.record(outcome, &mut history);
        std::thread::sleep(Duration::from_millis(20));
    }
    (history, tally)
}

/// Reads the note through the nodes in turn, 50 ms apart, until told to stop.
fn read_loop(cluster: &HostCluster, clients: &Clients) -> (Vec<Op>, Tally) {
    let client = NoteClient::new(2, clients.origin, Duration::from_secs(4));
    let (mut history, mut tally) = (Vec::new(), Tally::default());
    for n in 0..CLIENT_OPS_MAX {
        if clients.stop.load(Ordering::Relaxed) {
            break;
        }
        let url = cluster.url(NODE_IDS[(n + 2) % NODE_IDS.len()], "/note");
        let outcome = client.read(&url, &mut tally.unexpected);
        tally.record(outcome, &mut history);
        std::thread::sleep(Duration::from_millis(50));
    }
    (history, tally)
}

/// Once the clients stopped and every fault healed: the note read through
/// every node (each read linearizable), all the same; that value, and the
/// history with those reads.
fn final_reads(
    cluster: &HostCluster,
    clients: &Clients,
    mut history: Vec<Op>,
) -> (String, Vec<Op>) {
    let client = NoteClient::new(3, clients.origin, Duration::from_secs(4));
    let mut values = Vec::new();
    for id in NODE_IDS {
        let url = cluster.url(id, "/note");
        let op = wait_for(&format!("a final read through node {id}"), SETTLE, || {
            let mut unexpected = Vec::new();
            match client.read(&url, &mut unexpected) {
                Outcome::Recorded(op) => Some(op),
                _ => None,
            }
        });
        if let raftlb::lincheck::OpKind::Read(value) = &op.kind {
            values.push(value.clone());
        }
        history.push(op);
    }
    assert!(
        values.windows(2).all(|w| w[0] == w[1]),
        "final reads differ: {values:?}"
    );
    (values[0].clone(), history)
}
