//! The balancing simulator's table (tests/balance_sim): every policy on the
//! same seeded arrivals in each scenario of issue 13 (even, weak machine, noisy
//! neighbour, the neighbour shifting halfway, five doors), closed loop and open
//! loop at 70 % of capacity; p50/p99/p99.9 over three seeds. Beside the
//! deployable policies, three clairvoyant oracles (shown every server's true
//! state: the request's own completion, all requests' delay, and holding cheap
//! requests back) probe what choosing a server alone can do; they skip five
//! doors, where they ignore the node and replay the weak rows. And a queue
//! at the node (`raftlb+queue1/2`, `leastconn+q1/2`: at most 1 or 2 requests
//! in flight per server and node, the rest held in arrival order; HAProxy's
//! maxconn), which shows what halves a closed loop, and `raftlb+costly1`,
//! which holds costly requests alone. Then three more tables:
//! where
//! each policy spends the latency (Little's law and per-class percentiles),
//! raftlb's and the oracles' p99 over the best reference's (issue 13's goal),
//! and raftlb with reports every 250 ms against every 1000 ms.
//!
//! For tuning: `BALANCE_PARAMS=peak=1,table=0` changes raftlb's `Params`
//! (keys below), `BALANCE_ONLY=open` keeps the scenarios whose name and load
//! contain the text, `BALANCE_INTERVAL=250` sets the daemons' report interval
//! (ms) of the main tables. Closer to `make bench`'s machines:
//! `BALANCE_CFS=40,2.5` models CFS bandwidth control (each machine spends its
//! quota of a 40 ms period at up to 2.5 times its capacity, then stalls until
//! the period ends: the bench's 40 ms per 100 ms on a 2-core host, scaled to
//! the simulator's faster machines), and `BALANCE_NEIGHBOUR=4` gives the
//! noisy neighbour that many busy threads (the bench's; 2 by default).
//! `BALANCE_SHARED=1` adds the limits on each server's own count
//! (`Kind::SHARED`, an experiment that did not pay: README).

#[path = "../tests/balance_sim/mod.rs"]
mod balance_sim;

use std::time::Instant;

use balance_sim::policies::Kind;
use balance_sim::scenarios;
use raftlb::balance::Params;

const SEEDS: [u64; 3] = [1, 2, 3];
/// The report intervals compared (issue 13: "may drop to 250 ms if it pays").
const INTERVAL_FAST_MS: f64 = 250.0;
const INTERVAL_SLOW_MS: f64 = 1000.0;

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
    let interval: Option<f64> = std::env::var("BALANCE_INTERVAL")
        .ok()
        .map(|v| v.parse().expect("BALANCE_INTERVAL: milliseconds"));
    let bandwidth = std::env::var("BALANCE_CFS").ok().map(|v| {
        let (period, burst) = v
            .split_once(',')
            .expect("BALANCE_CFS: period_ms,burst (40,2.5)");
        balance_sim::Bandwidth {
            period_ms: period.parse().expect("BALANCE_CFS: a period in ms"),
            burst: burst.parse().expect("BALANCE_CFS: a burst factor"),
        }
    });
    let neighbour: Option<f64> = std::env::var("BALANCE_NEIGHBOUR")
        .ok()
        .map(|v| v.parse().expect("BALANCE_NEIGHBOUR: busy threads"));
    if bandwidth.is_some() || neighbour.is_some() {
        println!("CFS bandwidth control: {bandwidth:?}; neighbour's busy threads: {neighbour:?} (None: the defaults)\n");
    }
    let scenarios: Vec<_> = scenarios::all(scenarios::BENCH)
        .into_iter()
        .filter(|s| format!("{} {}", s.name, scenarios::load_name(s.load)).contains(&only))
        .map(|mut s| {
            s.report_interval_ms = interval.unwrap_or(s.report_interval_ms);
            s.bandwidth = bandwidth;
            if let Some(threads) = neighbour {
                let machines =
                    (s.machines.iter_mut()).chain(s.changes.iter_mut().map(|c| &mut c.machine));
                for m in machines.filter(|m| m.hog > 0.0) {
                    m.hog = threads;
                }
            }
            s
        })
        .collect();
    let shared = std::env::var("BALANCE_SHARED").is_ok_and(|v| v == "1");
    let mut kinds = Kind::ALL.to_vec();
    let mut over = scenarios::GOAL_OVER.to_vec();
    if shared {
        kinds.extend(Kind::SHARED);
        over.extend(Kind::SHARED);
    }
    let rows = scenarios::rows(&scenarios, &kinds, &SEEDS, &params);
    scenarios::print(&rows);
    println!("\nWhere the latency goes (ms; X*W = Little's L, a closed loop's clients; costly% = costly requests' share of all latency):");
    scenarios::print_classes(&rows);
    println!(
        "\np99 over the better of leastconn and p2c (goal: <= 0.50; the oracles are clairvoyant; they skip five doors, where they replay weak):"
    );
    scenarios::print_goal(&rows, &over);
    println!("\nFive doors over one (weak machine; goal: <= 1.2):");
    let mut doors = vec![Kind::Raftlb, Kind::RaftlbHold(1), Kind::RaftlbHoldCostly(1)];
    if shared {
        doors.extend(Kind::SHARED);
    }
    scenarios::print_doors(&rows, &doors);
    println!("\nShift: machine 1's share of requests before the neighbour moves onto it, and how soon it halves over 1 s (as make bench's row; goal: within 2 s):");
    scenarios::print_shift(&rows, &scenarios);
    println!("\nraftlb, report interval {INTERVAL_FAST_MS:.0} ms against {INTERVAL_SLOW_MS:.0} ms (ms; ratio < 1: faster reports pay):");
    scenarios::print_interval(
        &scenarios,
        &SEEDS,
        &params,
        INTERVAL_FAST_MS,
        INTERVAL_SLOW_MS,
    );
    println!("({:.1} s)", started.elapsed().as_secs_f64());
}
