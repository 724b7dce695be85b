//! The hunt: hundreds of random seeds, each a 3- or 5-node cluster under random
//! message loss, duplication, delay and reordering, partitions (symmetric and one
//! way), crashes that lose unsynced writes, restarts, leadership transfers, client
//! writes and linearizable reads. The oracle checks Raft's safety properties after
//! every step; after the faults heal, a leader must be elected and a new write
//! commit everywhere within a bounded number of ticks.
//!
//! `RAFTLB_SIM_SEED=n` replays one seed; `RAFTLB_SIM_SEEDS=n` sets how many;
//! `RAFTLB_SIM_TICKS=n` how long each runs.

mod sim;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use raftlb::raft::{Config, Rng, MESSAGE_OVERHEAD_BYTES};
use sim::{Cluster, Faults, Stats};

/// Seeds per `make test` run (the issue asks for at least 500; they take ~2 s).
const DEFAULT_SEEDS: u64 = 1000;
/// Ticks of faults per seed (10 ms each in the real runtime: 20 s of chaos).
const DEFAULT_TICKS: u64 = 2000;
/// Ticks the healed cluster gets to elect a leader and apply a write everywhere
/// (6 s at 10 ms a tick). Seen over 100,000 seeds: p50 13, p99 73, max 255; the
/// tail is seeds with PreVote off, where nodes left with divergent logs and terms
/// need several election rounds before the most up-to-date one wins.
const LIVENESS_TICKS: u64 = 600;

struct Outcome {
    /// Everything a run's course shows: equal fingerprints, equal runs.
    fingerprint: (u64, u64, u64, u64, u64),
    /// Ticks from the end of the faults to a write applied on every node.
    recovery_ticks: u64,
    elections: u64,
    committed: u64,
    reads: u64,
    stats: Stats,
}

/// What all seeds did together.
#[derive(Default)]
struct Totals {
    elections: u64,
    committed: u64,
    reads: u64,
    stats: Stats,
    recovery_ticks: Vec<u64>,
}

impl Totals {
    fn add(&mut self, o: Outcome) {
        self.elections += o.elections;
        self.committed += o.committed;
        self.reads += o.reads;
        self.stats += o.stats;
        self.recovery_ticks.push(o.recovery_ticks);
    }
}

fn run_seed(seed: u64, ticks: u64) -> Outcome {
    let mut rng = Rng::new(seed);
    let size = if rng.chance(1, 2) { 3 } else { 5 };
    let mut cluster = Cluster::with_config(random_config(size, &mut rng), seed);
    cluster.faults = Faults::chaos(&mut rng);
    for _ in 0..ticks {
        cluster.chaos_step();
    }
    cluster.heal_all();
    let recovery_ticks = cluster.check_liveness(LIVENESS_TICKS);
    let chain = cluster.node(1).sm.chain;
    let s = cluster.stats;
    Outcome {
        fingerprint: (chain, cluster.now, s.delivered, s.dropped, s.crashes),
        recovery_ticks,
        elections: cluster.oracle.elections,
        committed: cluster.oracle.committed_len(),
        reads: cluster.oracle.reads_checked,
        stats: cluster.stats,
    }
}

/// Settings drawn per seed: tiny messages (one entry each) up to roomy ones, so
/// that batches are cut everywhere; a window of 1 to 8 appends; frequent
/// snapshots; and now and then PreVote or CheckQuorum off, since safety must not
/// depend on them.
fn random_config(size: u64, rng: &mut Rng) -> Config {
    let mut config = Config::new(1, (1..=size).collect());
    // Half the seeds send one or two entries per append, which is what lets old
    // entries and a new leader's no-op travel apart (Figure 8).
    let largest = if rng.chance(1, 2) { 300 } else { 1024 };
    config.max_message_bytes = rng.range(MESSAGE_OVERHEAD_BYTES as u64 + 48, largest) as usize;
    config.snapshot_chunk_bytes = (config.max_message_bytes - MESSAGE_OVERHEAD_BYTES).min(200);
    config.max_inflight_appends = rng.range(1, 9) as usize;
    config.snapshot_threshold_entries = rng.range(10, 80);
    // Some seeds compact by size first (the runtime's notes can be large).
    config.snapshot_threshold_bytes = rng.range(200, 8000);
    config.pre_vote = !rng.chance(1, 4);
    config.check_quorum = !rng.chance(1, 4);
    config
}

#[test]
fn random_faults_never_break_safety_and_the_cluster_recovers() {
    let seeds = sim::seeds(DEFAULT_SEEDS);
    let ticks = std::env::var("RAFTLB_SIM_TICKS")
        .ok()
        .map_or(DEFAULT_TICKS, |v| {
            v.parse().expect("RAFTLB_SIM_TICKS is a number")
        });
    let started = std::time::Instant::now();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let totals = Mutex::new(Totals::default());
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&seed) = seeds.get(i) else { break };
                match std::panic::catch_unwind(|| run_seed(seed, ticks)) {
                    Ok(o) => totals
                        .lock()
                        .expect("no panic while holding the lock")
                        .add(o),
                    Err(_) => failures
                        .lock()
                        .expect("no panic while holding the lock")
                        .push(seed),
                }
            });
        }
    });
    let failures = failures.into_inner().expect("threads joined");
    let mut t = totals.into_inner().expect("threads joined");
    t.recovery_ticks.sort_unstable();
    let percentile = |p: usize| {
        t.recovery_ticks
            .get(t.recovery_ticks.len() * p / 100)
            .copied()
            .unwrap_or(0)
    };
    eprintln!(
        "{} seeds x {ticks} ticks in {:.1}s: {} elections, {} entries committed, {} reads checked",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        t.elections,
        t.committed,
        t.reads
    );
    eprintln!(
        "after healing, a write applied everywhere within: p50 {} ticks, p99 {}, max {}",
        percentile(50),
        percentile(99),
        t.recovery_ticks.last().copied().unwrap_or(0)
    );
    eprintln!("exercised: {:?}", t.stats);
    assert!(
        failures.is_empty(),
        "violations with seeds {failures:?}: replay one with RAFTLB_SIM_SEED=<seed>"
    );
    assert!(
        t.committed > 0,
        "the simulation committed nothing: it tested nothing"
    );
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [1, 2, 3] {
        let first = run_seed(seed, 500).fingerprint;
        let second = run_seed(seed, 500).fingerprint;
        assert_eq!(
            first, second,
            "seed {seed} ran differently twice: RAFTLB_SIM_SEED could not replay it"
        );
    }
}
