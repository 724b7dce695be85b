//! The hunt with membership changes: each seed is a 3- or 5-node cluster with
//! two spare nodes, under the random faults of `sim_random` (loss, duplication,
//! delay, partitions, crashes that lose unsynced writes, restarts, transfers)
//! and random single-server configuration changes: spares and removed nodes
//! added as learners, learners promoted once caught up, voters removed (the
//! leader too). Besides Raft's safety properties, the oracle checks that a
//! leader never uses a configuration more than one voter away from the last
//! committed one, that committed configurations move one voter at a time, and
//! that no learner or removed node campaigns or leads. After the faults heal, a
//! write must commit on every member. Then the run makes a few more changes
//! and loses its leader a few ticks later; when the rest's configuration can
//! spare it (`survives_losing`), they must elect a leader and commit. (Without
//! the promotion's binding, 2 of 3,000 seeds found its window; the sharp test
//! is in `tests/raft_membership.rs`.)
//!
//! `RAFTLB_SIM_SEED=n` replays one seed; `RAFTLB_SIM_SEEDS=n` sets how many.

mod sim;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use raftlb::raft::{Config, NodeId, Rng, MESSAGE_OVERHEAD_BYTES};
use sim::{Cluster, Faults, Stats};

/// Seeds per `make test` run.
const DEFAULT_SEEDS: u64 = 400;
/// Ticks of faults and changes per seed.
const TICKS: u64 = 2000;
/// Ticks the healed cluster gets to apply a write on every member.
const LIVENESS_TICKS: u64 = 800;

/// Most ticks between the last phase's change and the loss of its leader.
const LOSS_AFTER_CHANGE_TICKS: u64 = 12;

/// Runs whose last phase lost its leader (the others' configuration could
/// spare it, so they had to elect another).
static LEADERS_LOST: AtomicUsize = AtomicUsize::new(0);

/// Whether the cluster must stay live without `lost`: every other live node
/// that votes in its own configuration holds the same log and configuration,
/// and a majority of that configuration's voters are live, not `lost`, and
/// bound to their data dir or to none (an unbound voter is one the leader
/// never heard from: the leader binds whom it hears from, a promotion
/// included).
fn survives_losing(cluster: &Cluster, lost: NodeId) -> bool {
    let campaigners: Vec<NodeId> = cluster
        .up_ids()
        .into_iter()
        .filter(|&id| id != lost && cluster.raft(id).is_voter())
        .collect();
    let Some(&first) = campaigners.first() else {
        return false;
    };
    let view = |id: NodeId| {
        let raft = cluster.raft(id);
        (
            raft.log().last_index(),
            raft.log().term(raft.log().last_index()),
            raft.membership().clone(),
        )
    };
    let shared = view(first);
    if campaigners.iter().any(|&id| view(id) != shared) {
        return false;
    }
    let membership = shared.2;
    let electors = membership
        .voters()
        .filter(|&id| id != lost && cluster.is_up(id))
        .filter(|&id| {
            membership.get(id).is_some_and(|m| {
                m.incarnation == 0 || m.incarnation == cluster.node(id).data_incarnation
            })
        })
        .count();
    electors >= membership.quorum()
}

fn run_seed(seed: u64) -> (Stats, u64, u64) {
    let mut rng = Rng::new(seed);
    let size = if rng.chance(1, 2) { 3 } else { 5 };
    let mut config = Config::new(1, (1..=size).collect());
    let largest = if rng.chance(1, 2) { 300 } else { 1024 };
    config.max_message_bytes = rng.range(MESSAGE_OVERHEAD_BYTES as u64 + 48, largest) as usize;
    config.snapshot_chunk_bytes = (config.max_message_bytes - MESSAGE_OVERHEAD_BYTES).min(200);
    config.max_inflight_appends = rng.range(1, 9) as usize;
    config.snapshot_threshold_entries = rng.range(10, 80);
    config.pre_vote = !rng.chance(1, 4);
    let pre_vote = config.pre_vote;
    // Always on, as in the runtime: without CheckQuorum's lease a removed
    // node that never heard of its removal disrupts the cluster for as long
    // as it runs (dissertation §4.2.3; PreVote alone does not stop it). The
    // 100k hunt's seed 7008846 had both off: a removed node's campaigns,
    // relayed by a lagging learner's answers, deposed every leader.
    config.check_quorum = true;
    // Every data dir starts empty, as in the runtime: joining until bound.
    config.joining = true;
    let mut cluster = Cluster::with_spares(config, 2, seed);
    cluster.faults = Faults::chaos(&mut rng);
    cluster.faults.member_change_per_mille = rng.range(5, 60);
    // One disk lost in most runs, when `Cluster::may_lose_disk`: it comes
    // back empty under its name (joining again, another incarnation). Only
    // in runs with PreVote on, as the runtime always has it: without it a
    // far-behind node's campaigns (it cannot win, the empty node's vote does
    // not count) kept the one electable node from winning after healing
    // (seed 9013451).
    let wipe_rate = rng.range(0, 40);
    cluster.faults.wipe_per_mille = if pre_vote { wipe_rate } else { 0 };
    cluster.faults.max_wipes = 1;
    for _ in 0..TICKS {
        cluster.chaos_step();
    }
    cluster.heal_all();
    cluster.check_liveness(LIVENESS_TICKS);
    // Then one more change, and the leader lost a few ticks later, while the
    // change (or the binding after it) may still be on its way: when the
    // nodes that could campaign agree on their log and their configuration
    // keeps a majority of its voters up, none of them with a data dir other
    // than the one it is bound to, the rest must elect a leader and commit.
    // A promotion that left its voter unbound failed here (the chaos replay
    // of seed 1796339462129267183: three bound voters of four needed all
    // three).
    for _ in 0..rng.range(1, LOSS_AFTER_CHANGE_TICKS) {
        cluster.random_member_change();
        cluster.run(1);
    }
    if let Some(leader) = cluster.leader() {
        if survives_losing(&cluster, leader) {
            cluster.crash(leader);
            cluster.check_liveness(LIVENESS_TICKS);
            LEADERS_LOST.fetch_add(1, Ordering::Relaxed);
        }
    }
    (
        cluster.stats,
        cluster.oracle.changes_committed,
        cluster.oracle.committed_len(),
    )
}

#[test]
fn membership_changes_under_random_faults_never_break_safety() {
    let seeds = sim::seeds(DEFAULT_SEEDS);
    let started = std::time::Instant::now();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let totals = Mutex::new((Stats::default(), 0u64, 0u64));
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&seed) = seeds.get(i) else { break };
                match std::panic::catch_unwind(|| run_seed(seed)) {
                    Ok((stats, changes, committed)) => {
                        let mut t = totals.lock().expect("no panic while holding the lock");
                        t.0 += stats;
                        t.1 += changes;
                        t.2 += committed;
                    }
                    Err(_) => failures
                        .lock()
                        .expect("no panic while holding the lock")
                        .push(seed),
                }
            });
        }
    });
    let failures = failures.into_inner().expect("threads joined");
    let (stats, changes, committed) = totals.into_inner().expect("threads joined");
    eprintln!(
        "{} seeds in {:.1}s: {} configuration changes proposed, {changes} committed, {committed} entries committed",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        stats.changes_proposed,
    );
    eprintln!(
        "exercised: {stats:?}; {} runs lost their leader after a last change",
        LEADERS_LOST.load(Ordering::Relaxed)
    );
    assert!(
        failures.is_empty(),
        "violations with seeds {failures:?}: replay one with RAFTLB_SIM_SEED=<seed>"
    );
    assert!(
        changes >= seeds.len() as u64,
        "only {changes} configuration changes committed over {} seeds: the hunt tested little",
        seeds.len()
    );
}
