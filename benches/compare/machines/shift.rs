//! Scenario 4, shift: the noisy neighbour moves from machine 3 to machine 1
//! halfway through a 30 s closed loop through raftlb. The row gives how soon
//! the node's share to machine 1 halved (its forward counters read every
//! 250 ms, shares over 1 s) and p99 in each 5 s window (six loads of 5 s back
//! to back, the first after the warm-up), then the same under an open loop
//! (a row without a goal). raftlb alone: six references at
//! 30 s each would add three minutes to the section, and the goal
//! for this scenario is raftlb's own reaction time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{
    median_of, Bench, CLIENTS, NEIGHBOUR_LOOPS, OPEN_LOOP_CLIENTS, OPEN_LOOP_SHARE, QUOTA_US,
    SECTION, WARMUP_SECS,
};
use crate::loadgen::{self, Load};
use crate::support::Cluster;
use crate::table::{Report, Row};

const WINDOW_SECS: u64 = 5;
const WINDOWS: u64 = 6;
/// How often the node's forward counters are read.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// A share is taken over this many sample intervals (1 s).
const SHARE_SAMPLES: usize = 4;
/// The goal: the share to machine 1 halves within this long.
const GOAL_SECS: f64 = 2.0;

/// Seconds since the measured start, and the forwards to machines 1-3.
type Sample = (f64, [u64; 3]);

impl Bench<'_> {
    /// The closed loop (the row and goal), then the same move under
    /// an open loop at `OPEN_LOOP_SHARE` of the closed loop's req/s before
    /// the move: a closed loop's clients wait for their answers, so cheap
    /// requests keep going to the machine where they still finish soonest
    /// and its share of requests reads the reaction only loosely (in the
    /// balancing simulator not even the clairvoyant oracle's share halves
    /// there); an open loop shows it.
    pub(super) fn shift(&mut self, report: &mut Report) -> Result<(), String> {
        let (loads, samples, moved_at) = self.shift_run(None, report)?;
        report.row(row(&loads, &samples, moved_at, None));
        let rate = OPEN_LOOP_SHARE * median_of(&loads[..loads.len() / 2], |l| l.per_sec);
        let (loads, samples, moved_at) = self.shift_run(Some(rate), report)?;
        report.row(row(&loads, &samples, moved_at, Some(rate)));
        Ok(())
    }

    /// One run: the neighbour in machine 3, moved to machine 1 halfway; the
    /// loads by window, the node's forward counters over time, and when the
    /// move came (s).
    fn shift_run(
        &mut self,
        rate: Option<f64>,
        report: &mut Report,
    ) -> Result<(Vec<Load>, Vec<Sample>, f64), String> {
        self.set_quota(0, QUOTA_US)?;
        let neighbours = self.neighbours(2, report)?;
        std::thread::sleep(Duration::from_millis(
            3 * self.cluster.options.report_interval_ms,
        ));
        let (cluster, machines) = (self.cluster, self.machines);
        let metrics = cluster.url(self.node, "/metrics");
        let (url, label) = (
            cluster.url(self.node, ""),
            format!("raftlb node {}", cluster.ids[self.node]),
        );
        let half = Duration::from_secs(WINDOW_SECS * WINDOWS / 2);
        let start = Instant::now() + Duration::from_secs(WARMUP_SECS);
        let done = AtomicBool::new(false);
        let (loads, samples, moved) = std::thread::scope(|scope| {
            let sampler = scope.spawn(|| sample(&metrics, start, &done));
            let mover = scope.spawn(|| {
                std::thread::sleep((start + half).saturating_duration_since(Instant::now()));
                (neighbours.iter()).try_for_each(|n| machines[0].add(n.pid()))
            });
            let loads: Vec<Result<Load, String>> = (0..WINDOWS)
                .map(|w| {
                    let warmup = if w == 0 { WARMUP_SECS } else { 0 };
                    self.load_for(&[&url], &label, rate, (WINDOW_SECS, warmup), report)
                })
                .collect();
            done.store(true, Ordering::Relaxed);
            let samples = sampler.join().map_err(|_| "the sampler panicked");
            let moved = mover.join().map_err(|_| "the mover panicked".to_string());
            (loads, samples, moved)
        });
        drop(neighbours);
        moved??;
        let loads: Vec<Load> = loads.into_iter().collect::<Result<_, _>>()?;
        Ok((loads, samples?, half.as_secs_f64()))
    }
}

/// The node's forwards by machine every `SAMPLE_EVERY` until `done`.
fn sample(metrics: &str, start: Instant, done: &AtomicBool) -> Vec<Sample> {
    let mut samples = Vec::new();
    while !done.load(Ordering::Relaxed) {
        let forwards = crate::balancing::forwards(metrics);
        let at = Instant::now()
            .saturating_duration_since(start)
            .as_secs_f64();
        let count = |i| forwards.get(&Cluster::server_id(i)).copied().unwrap_or(0);
        if Instant::now() >= start {
            samples.push((at, [count(0), count(1), count(2)]));
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
    samples
}

/// Machine 1's share (%) of the forwards between samples `from` and `to`.
fn share(samples: &[Sample], from: usize, to: usize) -> Option<f64> {
    let (a, b) = (samples.get(from)?.1, samples.get(to)?.1);
    let delta: Vec<u64> = (0..3).map(|i| b[i].saturating_sub(a[i])).collect();
    let total: u64 = delta.iter().sum();
    (total > 0).then(|| delta[0] as f64 * 100.0 / total as f64)
}

/// The row: the share before, how soon it halved, p99 by window. The closed
/// loop's (`rate` None) carries the goal; the open loop's is for
/// reading beside it.
fn row(loads: &[Load], samples: &[Sample], moved_at: f64, rate: Option<f64>) -> Row {
    let at = |t: f64| samples.iter().position(|s| s.0 >= t);
    let before = at(moved_at - WINDOW_SECS as f64)
        .zip(at(moved_at))
        .and_then(|(a, b)| share(samples, a, b));
    let halved = before.and_then(|before| {
        let first = at(moved_at)?;
        (first.max(SHARE_SAMPLES)..samples.len())
            .find(|i| share(samples, i - SHARE_SAMPLES, *i).is_some_and(|s| s <= before / 2.0))
            .map(|i| samples[i].0 - moved_at)
    });
    // How low the share went by chance before the move, over 1 s: a halving
    // after it means little if the share dipped that low before.
    let lowest_before = at(moved_at)
        .map(|end| {
            (SHARE_SAMPLES..end)
                .filter_map(|i| share(samples, i - SHARE_SAMPLES, i))
                .fold(f64::INFINITY, f64::min)
        })
        .filter(|l| l.is_finite());
    let p99s: Vec<String> = loads.iter().map(|l| loadgen::ms(l.p99_ms)).collect();
    let per_sec: Vec<String> = (loads.iter())
        .map(|l| loadgen::thousands(l.per_sec))
        .collect();
    let (left, right) = p99s.split_at(p99s.len() / 2);
    let share_text = match (before, halved) {
        (Some(b), Some(t)) => format!(
            "machine 1's share {b:.0} % in the {WINDOW_SECS} s before the move (its lowest over 1 s: {:.0} %), half that ({:.0} %, over 1 s) {t:.1} s after it",
            lowest_before.unwrap_or(f64::NAN),
            b / 2.0
        ),
        (Some(b), None) => format!(
            "machine 1's share {b:.0} % in the {WINDOW_SECS} s before the move, never half that (over 1 s) in the {:.0} s after it",
            moved_at
        ),
        _ => "no forwards counted before the move".to_string(),
    };
    let load = match rate {
        None => format!("closed loop, mixed N, {CLIENTS} clients"),
        Some(rate) => format!(
            "open loop at {rate:.0} req/s ({:.0} % of the closed loop's before the move), mixed N, {OPEN_LOOP_CLIENTS} connections",
            OPEN_LOOP_SHARE * 100.0
        ),
    };
    let row = Row::new(
        SECTION,
        format!(
            "shift: {NEIGHBOUR_LOOPS} busy loops move from machine 3 to machine 1 at {moved_at:.0} s of a {} s {load}",
            WINDOW_SECS * WINDOWS
        ),
        format!(
            "{share_text}; p99 by {WINDOW_SECS} s window: {} | {}; req/s: {}",
            left.join(", "),
            right.join(", "),
            per_sec.join(", ")
        ),
    );
    match rate {
        None => row.goal(
            format!("share halves within {GOAL_SECS} s"),
            halved.is_some_and(|t| t <= GOAL_SECS),
        ),
        Some(_) => row,
    }
}
