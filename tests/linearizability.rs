//! The note is one linearizable register, on real processes under SIGKILLs:
//! client threads read and write it through random nodes while a nemesis kills
//! nodes (the leader among them, never more than two down at once) and restarts
//! them from their data dirs. Every answer is recorded with its call and return
//! time, and `raftlb::lincheck` searches for one order of the operations that
//! explains them all. A write answered 503, cut off or timed out may or may not
//! have happened, and is recorded as such; a read without a 200 proves nothing
//! and is left out.

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use raftlb::lincheck::{check_register, Op, OpKind, Verdict};
use raftlb::raft::Rng;
use support::history::{since, NoteClient, Tally};
use support::{exclusive, Cluster, Options};

const NODES: usize = 5;
const CLIENTS: usize = 5;
/// How long the clients and the nemesis run.
const RUN: Duration = Duration::from_secs(18);
/// A bound on each client's operations besides the time; with the pauses below
/// the time runs out first.
const MAX_OPS_PER_CLIENT: usize = 4_000;
/// Pause between a client's operations, in ms: an operation takes a millisecond
/// or two, and without a pause five clients would record 70,000 of them.
const PAUSE_MS: (u64, u64) = (2, 15);
/// Longer than a node's own note timeout (3 s), so a node's 503 arrives first.
const CALL_TIMEOUT: Duration = Duration::from_secs(4);
/// The last stretch of the run has no faults, so that the operations then show
/// the cluster serving after the last kill.
const QUIET_END: Duration = Duration::from_secs(3);
/// At most this many nodes down at once: the other three are a majority.
const MAX_DOWN: usize = 2;
const SETTLE: Duration = Duration::from_secs(20);

/// One client: random reads and writes of unique values through random nodes
/// (dead ones included), until `RUN` has passed since `origin`.
fn client(id: usize, seed: u64, ports: &[u16], origin: Instant) -> (Vec<Op>, Tally) {
    let note = NoteClient::new(id, origin, CALL_TIMEOUT);
    let mut rng = Rng::new(seed);
    let mut history = Vec::new();
    let mut tally = Tally::default();
    for n in 0..MAX_OPS_PER_CLIENT {
        if origin.elapsed() >= RUN {
            break;
        }
        std::thread::sleep(Duration::from_millis(rng.range(PAUSE_MS.0, PAUSE_MS.1)));
        let url = format!(
            "http://127.0.0.1:{}/note",
            ports[rng.range(0, ports.len() as u64) as usize]
        );
        let outcome = if rng.chance(1, 2) {
            note.write(&url, format!("c{id}-{n}"), &mut tally.unexpected)
        } else {
            note.read(&url, &mut tally.unexpected)
        };
        tally.record(outcome, &mut history);
    }
    (history, tally)
}

/// The leader as the live nodes see it, if it is live itself.
fn live_leader(cluster: &Cluster) -> Option<usize> {
    let leader_id = (cluster.live().into_iter()).find_map(|i| cluster.status(i)?.leader)?;
    let leader = cluster.ids.iter().position(|id| *id == leader_id)?;
    cluster.nodes[leader].is_some().then_some(leader)
}

/// A kill: when (ns from the origin), which node, and whether it led.
struct Kill {
    at_ns: u64,
    node: usize,
    leader: bool,
}

/// Every 1-2 s: restart a dead node (always when two are down, else on a coin),
/// then SIGKILL the leader (every third kill, the first among them) or a random
/// live node.
fn nemesis(cluster: &mut Cluster, rng: &mut Rng, origin: Instant) -> Vec<Kill> {
    let mut kills = Vec::new();
    loop {
        std::thread::sleep(Duration::from_millis(rng.range(1_000, 2_000)));
        if origin.elapsed() + QUIET_END > RUN {
            return kills;
        }
        let down: Vec<usize> = (0..NODES).filter(|i| cluster.nodes[*i].is_none()).collect();
        if !down.is_empty() && (down.len() >= MAX_DOWN || rng.chance(1, 2)) {
            cluster.restart_node(down[rng.range(0, down.len() as u64) as usize]);
        }
        if NODES - cluster.live().len() >= MAX_DOWN {
            continue;
        }
        let leader = if kills.len() % 3 == 0 {
            live_leader(cluster)
        } else {
            None
        };
        let live = cluster.live();
        let node = leader.unwrap_or_else(|| live[rng.range(0, live.len() as u64) as usize]);
        kills.push(Kill {
            at_ns: since(origin),
            node,
            leader: leader.is_some(),
        });
        cluster.kill_node(node);
    }
}

#[test]
fn the_note_is_linearizable_while_nodes_are_killed_and_restarted() {
    let _one = exclusive();
    let seed = std::env::var("RAFTLB_LIN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            now.as_nanos() as u64
        });
    eprintln!("linearizability seed {seed} (replay the choices with RAFTLB_LIN_SEED={seed})");
    let mut cluster = Cluster::start(Options {
        nodes: NODES,
        workers: 0,
        // About 3,000 writes a run: snapshots are taken (and installed on
        // restarted nodes) under the faults too.
        snapshot_entries: Some(500),
        ..Options::default()
    });
    cluster.wait_for_leader(SETTLE);
    let ports = cluster.ports.clone();
    let mut rng = Rng::new(seed);
    let origin = Instant::now();
    let (results, kills) = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|id| {
                let client_seed = rng.next_u64();
                let ports = &ports;
                scope.spawn(move || client(id, client_seed, ports, origin))
            })
            .collect();
        let kills = nemesis(&mut cluster, &mut rng, origin);
        let results: Vec<(Vec<Op>, Tally)> = clients
            .into_iter()
            .map(|c| c.join().expect("a client thread panicked"))
            .collect();
        (results, kills)
    });
    let end_ns = since(origin);

    let mut history = Vec::new();
    let mut total = Tally::default();
    for (ops, tally) in results {
        history.extend(ops);
        total.add(tally);
    }
    let leader_kills = kills.iter().filter(|k| k.leader).count();
    eprintln!(
        "linearizability: {} ops recorded ({} writes ok, {} writes unknown, {} reads ok); \
         left out: {} refused by dead nodes, {} reads without an answer; \
         {} kills ({leader_kills} of the leader)",
        history.len(),
        total.ok_writes,
        total.unknown_writes,
        total.reads,
        total.refused,
        total.unanswered_reads,
        kills.len(),
    );
    assert!(
        total.unexpected.is_empty(),
        "answers outside the contract: {:?}",
        total.unexpected
    );

    // Not vacuous: plenty of operations, faults that happened, and writes and
    // reads that succeeded after every kill.
    assert!(
        total.ok_writes + total.reads >= 200,
        "too few completed operations"
    );
    assert!(kills.len() >= 5, "too few kills: {}", kills.len());
    assert!(leader_kills >= 1, "the leader was never killed");
    let mut fewest = usize::MAX;
    for (k, kill) in kills.iter().enumerate() {
        let until_ns = kills.get(k + 1).map_or(end_ns, |next| next.at_ns);
        let completed = |write: bool| {
            (history.iter())
                .filter(|op| {
                    op.returned_ns.is_some()
                        && matches!(op.kind, OpKind::Write(_)) == write
                        && (kill.at_ns..until_ns).contains(&op.invoked_ns)
                })
                .count()
        };
        let (writes, reads) = (completed(true), completed(false));
        assert!(
            writes > 0 && reads > 0,
            "{writes} writes and {reads} reads completed between kill {k} (node {}, \
             at {} ms) and the next",
            kill.node,
            kill.at_ns / 1_000_000
        );
        fewest = fewest.min(writes + reads);
    }
    eprintln!("linearizability: at least {fewest} operations completed between two kills");

    let start = Instant::now();
    let verdict = check_register("", &history).unwrap_or_else(|e| panic!("lincheck: {e}"));
    eprintln!("linearizability: checked in {:?}", start.elapsed());
    match verdict {
        Verdict::Linearizable { ops } => assert_eq!(ops, history.len()),
        Verdict::NotLinearizable { explanation } => {
            panic!("the note is not linearizable (seed {seed}):\n{explanation}")
        }
    }
}
