//! The balancing simulator's table (tests/balance_sim): every policy on the
//! same seeded arrivals in each scenario of issue 13 (even, weak machine, noisy
//! neighbour, the neighbour shifting halfway, five doors), closed loop and open
//! loop at 70 % of capacity; p50/p99/p99.9 over three seeds.
//!
//! For tuning: `BALANCE_PARAMS=peak=1,table=0` changes raftlb's `Params`
//! (keys below), `BALANCE_ONLY=open` keeps the scenarios whose name and load
//! contain the text.

#[path = "../tests/balance_sim/mod.rs"]
mod balance_sim;

use std::time::Instant;

use balance_sim::scenarios;
use raftlb::balance::Params;

const SEEDS: [u64; 3] = [1, 2, 3];

fn main() {
    let started = Instant::now();
    let mut params = Params::default();
    for kv in std::env::var("BALANCE_PARAMS")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
    {
        let (k, v) = kv.split_once('=').expect("BALANCE_PARAMS: key=value,...");
        let v: f64 = v.parse().expect("BALANCE_PARAMS: a number");
        match k {
            "decay" => params.slowdown_decay_ms = v,
            "peak" => params.slowdown_peak = v,
            "two" => params.two_choices = v > 0.0,
            "stale" => params.slowdown_stale_ms = v,
            "table" => params.table_weight = v,
            "report_stale" => params.report_stale_ms = v,
            _ => panic!("BALANCE_PARAMS: unknown key {k}"),
        }
    }
    let only = std::env::var("BALANCE_ONLY").unwrap_or_default();
    let scenarios: Vec<_> = scenarios::all(scenarios::BENCH)
        .into_iter()
        .filter(|s| format!("{} {}", s.name, scenarios::load_name(s.load)).contains(&only))
        .collect();
    let rows = scenarios::rows(&scenarios, &SEEDS, &params);
    scenarios::print(&rows);
    println!("({:.1} s)", started.elapsed().as_secs_f64());
}
