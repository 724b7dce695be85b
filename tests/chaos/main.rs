//! `make chaos`: a full cluster (five nodes, three workers, their daemons) under
//! a client load of prime lookups and note writes and reads, while a nemesis
//! kills, pauses and restarts nodes, kills and restarts workers and, where it
//! can, cuts the network between nodes and drops datagrams. At the end
//! everything is healed and one summary says what happened: the operations
//! per kind, every failover's time, whether the note's history was
//! linearizable, and how many acknowledged writes were lost. Any safety
//! violation (two leaders in a term, a non-linearizable history, a lost write,
//! a wrong prime, an answer outside the contract) or a broken liveness promise
//! (no leader with three nodes up, an old leader that goes on leading) fails.
//!
//! CHAOS_SECS sets the length (30 s by default; `make chaos` runs 120) and
//! CHAOS_SEED replays the nemesis's and the clients' choices (timing differs).
//! CHAOS_NET=0 leaves the network alone. CHAOS_POWER=1 puts every node's data
//! dir on a PowerFs of its own (tests/support/powerfs) and cuts the power on a
//! node's disk (drops what it did not fsync) each time the nemesis SIGKILLs it;
//! the power on all five at once is cut by tests/power_cut.rs.
//!
//! The nemesis changes the membership too (remove, add, replace, a disk lost
//! and repaired), with two spare nodes F and G made at the start; the end
//! checks the members of the final configuration.

#[path = "../support/mod.rs"]
mod support;

#[path = "../support/powerfs/mod.rs"]
mod powerfs;

// The hosts of tests/hosts: CHAOS_HOSTS=1 puts every program on one of its own.
#[allow(dead_code)] // tests/hosts uses the rest
#[path = "../hosts/net.rs"]
mod hostnet;

mod load;
mod nemesis;
mod netfault;
mod summary;
mod watch;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use raftlb::lincheck::{check_register, lost_writes, Op, OpKind, Verdict};
use raftlb::raft::Rng;

use hostnet::Net;
use load::PrimeTally;
use nemesis::members::SPARES;
use nemesis::{Nemesis, Network};
use netfault::NetFaults;
use powerfs::Disks;
use summary::Summary;
use support::history::{NoteClient, Tally};
use support::{exclusive, Cluster, Options, Placement};
use watch::Watch;

const DEFAULT_SECS: u64 = 30;
const PRIME_CLIENTS: usize = 2;
const NOTE_CLIENTS: usize = 4;
/// The last stretch of the run has no faults, so that the operations then show
/// the cluster serving again after the last one.
const QUIET_END: Duration = Duration::from_secs(4);
/// Bounds on the waits of the start and of the end (leader, convergence).
const SETTLE: Duration = Duration::from_secs(20);
/// Snapshots every 500 entries: a run writes thousands, so snapshots are taken
/// and sent to restarted nodes under the faults too.
const SNAPSHOT_ENTRIES: u64 = 500;

/// Node slots: the five of the cluster and the spares.
fn node_slots() -> usize {
    Options::default().nodes + SPARES.len()
}

/// The hosts of CHAOS_HOSTS=1: nodes A-E, the spares, then each worker and
/// its daemon.
fn host_names() -> Vec<&'static str> {
    let mut names = vec!["A", "B", "C", "D", "E"];
    names.extend(SPARES);
    names.extend([
        "worker-1", "worker-2", "worker-3", "daemon-1", "daemon-2", "daemon-3",
    ]);
    assert_eq!(names.len(), node_slots() + 2 * Options::default().workers);
    names
}

/// Each program of the cluster on its host of `net`.
fn placement(net: &Net) -> Placement {
    let names = host_names();
    let (nodes, workers) = (node_slots(), Options::default().workers);
    net.placement(
        &names[..nodes],
        &names[nodes..nodes + workers],
        &names[nodes + workers..],
    )
}

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let value = text.trim().parse().unwrap_or_else(|_| {
        panic!("{name}={text:?}: want a whole number");
    });
    Some(value)
}

#[test]
fn the_cluster_stays_safe_and_live_under_a_nemesis() {
    let _one = exclusive();
    let secs = env_u64("CHAOS_SECS").unwrap_or(DEFAULT_SECS);
    assert!(
        (10..=86_400).contains(&secs),
        "CHAOS_SECS={secs}: want 10 to 86400 (the faults stop {QUIET_END:?} before the end)"
    );
    let run = Duration::from_secs(secs);
    let seed = env_u64("CHAOS_SEED").unwrap_or_else(|| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        now.as_nanos() as u64
    });
    // CHAOS_HOSTS=1: every node, worker and daemon on a host (network
    // namespace) of its own, network faults per link between hosts. Declared
    // before the cluster, so the hosts go after every process is killed.
    let hosts = std::env::var("CHAOS_HOSTS")
        .is_ok_and(|v| v == "1")
        .then(|| {
            Net::create(&host_names()).unwrap_or_else(|why| panic!("CHAOS_HOSTS=1, but: {}", why.0))
        });
    // Before anything is started: every process and socket from here on lives
    // in the namespace this puts the thread in, when it can.
    let net = match hosts {
        Some(_) => Err("on hosts, per link instead".to_string()),
        None => NetFaults::enter(),
    };
    let net_line = match (&hosts, &net) {
        (Some(_), _) => "on, per link between hosts (CHAOS_HOSTS=1: a network namespace per program, nftables in the sender's; one-way, asymmetric, cut from the leader, flapping)".to_string(),
        (None, Ok(_)) => "on (nftables in a network namespace of the test's own)".to_string(),
        (None, Err(why)) => format!("off: {why}"),
    };
    let network = match (&hosts, &net) {
        (Some(hosts), _) => Some(Network::Hosts(hosts)),
        (None, Ok(faults)) => Some(Network::Loopback(faults)),
        (None, Err(_)) => None,
    };
    let disks = match std::env::var("CHAOS_POWER").is_ok_and(|v| v == "1") {
        true => Disks::mount(node_slots()),
        false => Err("CHAOS_POWER=1 cuts it with every node kill".into()),
    };
    let power_line = match &disks {
        Ok(_) => "on (each node's data dir on a PowerFs, cut with every kill)".to_string(),
        Err(why) => format!("off: {why}"),
    };
    eprintln!("chaos: seed {seed} (replay the choices with CHAOS_SEED={seed}), {secs} s, network faults {net_line}, power cuts {power_line}");

    // Declared after the disks, so it drops first: every node is killed
    // before its disk is unmounted.
    let mut cluster = Cluster::start(Options {
        snapshot_entries: Some(SNAPSHOT_ENTRIES),
        data_dirs: disks.as_ref().map(Disks::paths).unwrap_or_default(),
        hosts: hosts.as_ref().map(placement),
        ..Options::default()
    });
    cluster.wait_for_leader(SETTLE);
    cluster.wait_for_servers(&[true, true, true], SETTLE);
    // The spares' slots (ports, hosts, disks): not started, no members.
    for id in SPARES {
        cluster.add_node_slot(id);
    }
    let nodes: Vec<String> = (0..cluster.ids.len()).map(|i| cluster.url(i, "")).collect();
    let watch = Watch::new(&cluster.ids, &nodes);
    let mut rng = Rng::new(seed);
    let origin = Instant::now();
    let stop_observing = AtomicBool::new(false);

    let (primes, notes, nemesis) = std::thread::scope(|scope| {
        let observer = scope.spawn(|| watch.observe(&stop_observing));
        let prime_clients: Vec<_> = (0..PRIME_CLIENTS)
            .map(|_| {
                let (seed, nodes, watch) = (rng.next_u64(), &nodes, &watch);
                scope.spawn(move || load::primes(seed, nodes, watch, origin, run))
            })
            .collect();
        let note_clients: Vec<_> = (0..NOTE_CLIENTS)
            .map(|id| {
                let (seed, nodes, watch) = (rng.next_u64(), &nodes, &watch);
                scope.spawn(move || load::notes(id, seed, nodes, watch, origin, run))
            })
            .collect();
        let nemesis = Nemesis::new(
            &mut cluster,
            &watch,
            network,
            disks.as_ref().ok(),
            rng.next_u64(),
            origin,
        )
        .run(run - QUIET_END);
        let primes: Vec<(PrimeTally, Vec<u64>)> = (prime_clients.into_iter())
            .map(|c| c.join().expect("a prime client panicked"))
            .collect();
        let notes: Vec<(Vec<Op>, Tally)> = (note_clients.into_iter())
            .map(|c| c.join().expect("a note client panicked"))
            .collect();
        stop_observing.store(true, Ordering::Relaxed);
        observer.join().expect("the observer panicked");
        (primes, notes, nemesis)
    });
    let healed_at = nemesis.healed_at;

    let mut prime_tally = PrimeTally::default();
    let mut primes_after_heal = 0;
    for (tally, ok_at_ms) in primes {
        primes_after_heal += ok_at_ms
            .iter()
            .filter(|ms| **ms > healed_at.as_millis() as u64)
            .count();
        prime_tally.add(tally);
    }
    let mut history = Vec::new();
    let mut note_tally = Tally::default();
    for (ops, tally) in notes {
        history.extend(ops);
        note_tally.add(tally);
    }
    let healed_ns = healed_at.as_nanos() as u64;
    let notes_after_heal = (history.iter())
        .filter(|op| op.returned_ns.is_some_and(|r| r > healed_ns))
        .count();

    // The end: one leader, every voter of the final configuration caught up,
    // every one's read the same.
    let mut violations = Vec::new();
    let voters = nemesis.final_voters.clone();
    let converged = converge(&watch, &voters);
    if let Err(e) = &converged {
        violations.push(e.clone());
    }
    if let Err(e) = same_configuration(&cluster, &voters) {
        violations.push(e);
    }
    let final_value = final_reads(&cluster, &voters, origin, &mut history, &mut violations);

    let started = Instant::now();
    let verdict = check_register("", &history);
    let check_took = started.elapsed();
    let lost = final_value
        .as_deref()
        .map(|value| lost_writes(&history, value))
        .unwrap_or_default();

    violations.extend(watch.violations());
    violations.extend(
        prime_tally
            .wrong
            .iter()
            .map(|w| format!("wrong prime: {w}")),
    );
    violations.extend(
        (prime_tally.unexpected.iter().chain(&note_tally.unexpected))
            .map(|u| format!("answer outside the contract: {u}")),
    );
    match &verdict {
        Ok(Verdict::Linearizable { .. }) => {}
        Ok(Verdict::NotLinearizable { explanation }) => {
            violations.push(format!("the note is not linearizable:\n{explanation}"))
        }
        Err(e) => violations.push(format!("the linearizability check gave up: {e}")),
    }
    for &i in &lost {
        violations.push(format!("acknowledged write lost: {:?}", history[i]));
    }
    if primes_after_heal == 0 || notes_after_heal == 0 {
        violations.push(format!(
            "after the heal only {primes_after_heal} primes and {notes_after_heal} note \
             operations completed"
        ));
    }

    let summary = Summary {
        seed,
        secs,
        net: net_line,
        power: match disks.is_ok() {
            true => format!("{power_line}: {} cuts", nemesis.power_cuts),
            false => power_line,
        },
        done: nemesis.done,
        members: nemesis.members,
        final_voters: voters.iter().map(|i| cluster.ids[*i].clone()).collect(),
        failovers: nemesis.failovers,
        stepped_down: nemesis.stepped_down,
        primes: prime_tally,
        notes: note_tally,
        verdict,
        check_took,
        lost: lost.len(),
        terms_with_a_leader: watch.terms_with_a_leader(),
        two_leaders_seen: watch.two_leaders_seen(),
        converged: converged.ok(),
        violations,
    };
    eprintln!("{summary}");
    assert!(
        summary.violations.is_empty(),
        "chaos found {} violation(s) with seed {seed} (replay with CHAOS_SEED={seed}):\n{}",
        summary.violations.len(),
        summary.violations.join("\n")
    );
    // Not vacuous: the load ran and the faults happened.
    assert!(summary.primes.ok >= 100, "too few prime answers");
    assert!(
        summary.notes.ok_writes >= 50 && summary.notes.reads >= 50,
        "too few note operations"
    );
    assert!(!summary.failovers.is_empty(), "no failover happened");
}

/// Waits until `nodes` agree on a leader and every one has applied what that
/// leader had committed when they first agreed: the index they converged on.
fn converge(watch: &Watch, nodes: &[usize]) -> Result<u64, String> {
    let start = Instant::now();
    let mut target = None;
    while start.elapsed() < SETTLE {
        match target {
            None => {
                if let Some((leader, _)) = watch.agreed_leader(nodes) {
                    target = watch.status(leader).map(|s| s.commit_index);
                }
            }
            Some(index) => {
                let caught_up = nodes
                    .iter()
                    .all(|i| watch.status(*i).is_some_and(|s| s.applied_index >= index));
                if caught_up {
                    return Ok(index);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(match target {
        None => format!("the healed cluster agreed on no leader within {SETTLE:?}"),
        Some(index) => format!("not every node applied index {index} within {SETTLE:?}"),
    })
}

/// Waits until every node of `voters` shows exactly them as the voters, and
/// no learner, in its `/status`.
fn same_configuration(cluster: &Cluster, voters: &[usize]) -> Result<(), String> {
    let mut want: Vec<String> = voters.iter().map(|i| cluster.ids[*i].clone()).collect();
    want.sort();
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < SETTLE {
        seen = (voters.iter())
            .map(|&i| {
                let mut config = support::membership::configuration(cluster, i).unwrap_or_default();
                config.sort();
                (cluster.ids[i].clone(), config)
            })
            .collect();
        let agree = (seen.iter()).all(|(_, config)| {
            config.iter().all(|(_, voter)| *voter)
                && config.iter().map(|(id, _)| id).eq(want.iter())
        });
        if agree {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "the final voters {want:?} do not all show that configuration: {seen:?}"
    ))
}

/// Reads the note through every node of `voters` once the clients have
/// stopped, adds the reads to the history, and returns the value when they
/// all agree.
fn final_reads(
    cluster: &Cluster,
    voters: &[usize],
    origin: Instant,
    history: &mut Vec<Op>,
    violations: &mut Vec<String>,
) -> Option<String> {
    let client = NoteClient::new(usize::MAX, origin, Duration::from_secs(4));
    let mut values = Vec::new();
    let mut unexpected = Vec::new();
    for &i in voters {
        let url = cluster.url(i, "/note");
        let start = Instant::now();
        loop {
            if let support::history::Outcome::Recorded(op) = client.read(&url, &mut unexpected) {
                if let OpKind::Read(value) = &op.kind {
                    values.push((cluster.ids[i].clone(), value.clone()));
                }
                history.push(op);
                break;
            }
            if start.elapsed() > SETTLE {
                violations.push(format!(
                    "node {} did not answer GET /note after the heal",
                    cluster.ids[i]
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    violations.extend(
        unexpected
            .into_iter()
            .map(|u| format!("answer outside the contract: {u}")),
    );
    let first = values.first()?.1.clone();
    if values.iter().any(|(_, v)| *v != first) {
        violations.push(format!(
            "the nodes read different notes after the heal: {values:?}"
        ));
        return None;
    }
    Some(first)
}
