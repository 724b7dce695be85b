//! The node simulator's hunt (`tests/nodesim`): random seeds, each five whole
//! nodes (`NodeLogic` on simulated disks) under datagram loss, duplication,
//! delay, partitions, power cuts of one node and of all five, daemons falling
//! silent, and note clients; the oracle checks linearizable notes, no lost
//! acknowledged write, equal tables at equal applied indexes, the dead-marking
//! rule, reports in order, and one leader per term.
//!
//! `RAFTLB_NODESIM_SEED=n` replays one seed; `RAFTLB_NODESIM_SEEDS=n` sets how
//! many (`make hunt` runs 100,000); `RAFTLB_NODESIM_STEPS=n` how long each runs.

mod nodesim;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use nodesim::{NodeSim, Stats};

/// Seeds per `make test` run.
const DEFAULT_SEEDS: u64 = 40;
/// Steps of faults per seed (10 ms each: 15 s of a cluster's life).
const DEFAULT_STEPS: u64 = 1500;

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, not {value:?}")),
    )
}

#[test]
fn whole_nodes_keep_their_promises_under_random_faults() {
    let steps = env_u64("RAFTLB_NODESIM_STEPS").unwrap_or(DEFAULT_STEPS);
    let seeds: Vec<u64> = match env_u64("RAFTLB_NODESIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let count = env_u64("RAFTLB_NODESIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
            let base = env_u64("RAFTLB_NODESIM_BASE").unwrap_or_else(|| {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                nanos % 1_000_000_000
            });
            eprintln!(
                "node sim: {count} seeds from base {base} (RAFTLB_NODESIM_BASE={base} repeats them)"
            );
            (0..count).map(|i| base + i).collect()
        }
    };
    // Seeds are independent: run them on every core.
    let next = AtomicU64::new(0);
    let totals = Mutex::new(Stats::default());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(&seed) = seeds.get(k) else { break };
                let mut sim = NodeSim::new(seed);
                sim.run(steps);
                *totals.lock().unwrap_or_else(|e| e.into_inner()) += sim.stats;
            });
        }
    });
    let t = totals.into_inner().unwrap_or_else(|e| e.into_inner());
    eprintln!("node sim: {} seeds: {t:?}", seeds.len());
    // A run that exercised nothing proves nothing.
    if seeds.len() >= 10 {
        assert!(t.writes_acked > 0 && t.reads > 0, "{t:?}");
        assert!(
            t.crashes > 0 && t.marked_dead > 0 && t.snapshots > 0,
            "{t:?}"
        );
    }
}
