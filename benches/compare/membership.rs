//! Changing the membership while clients run (issue 14), raftlb beside a
//! 5-member etcd 3.4, each a cluster of its own started for this section
//! (a replacement changes who the members are). Trials alternate.
//!
//! - Replace (`replace.rs`): SIGKILL a follower, delete its data dir, put a
//!   new member (new name, new port) in its place; timed from the first
//!   membership command until the new member votes and has caught up. The
//!   client loops go through a surviving member, as in `failover.rs`
//!   (100-byte note writes or etcd puts, raftlb prime requests; 1 s timeout,
//!   a failed call sent again at once); the gap runs from the kill to the end.
//! - Rolling restart (`rolling.rs`): every member in turn, leader last,
//!   stopped with SIGTERM (both systems hand leadership over before a leader
//!   stops), started again on its data dir, caught up before the next. The
//!   clients move to another node when one is down: raftlb's are the CLI's own
//!   failover (`raftlb note set`, `raftlb prime`: the library calls the CLI
//!   makes, with its default timeouts); etcd's put goes to the next member
//!   when one cannot be reached. The goal: no failed write, no failed
//!   prime.
//!
//! Every call that failed is counted, from the loops' start to their stop;
//! the gap is the longest wait between two successes, from the last success
//! before the operation began (or the loop's start, if none) to the first
//! after it ended.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::etcd::Etcd;
use crate::failover::{gap_ms, percentile, wait};
use crate::replace;
use crate::rolling;
use crate::support::Cluster;
use crate::table::{Report, Row};
use crate::{cluster_options, http, Settings};

pub const SECTION: &str = "membership";
/// A replacement starts this long after the system's start or last change at
/// the earliest: etcd refuses `member add` ("unhealthy cluster") until its
/// members have been connected to each other for 5 s (the strict
/// reconfiguration check), and a trial right after the last one would time
/// that wait rather than the replacement. The same rule for both systems.
const SETTLE: Duration = Duration::from_secs(6);
/// The client loops run this long before the operation, to have a success before it.
const LEAD_IN: Duration = Duration::from_millis(300);
/// A loop that has not succeeded this long after the operation ended has its
/// gap shown as "did not recover".
const RECOVERY_MAX: Duration = Duration::from_secs(15);
/// Bound on a loop's calls, far above what a trial makes.
const CALLS_MAX: u64 = 1_000_000;
/// The through-a-member loops' call timeout, as in `failover.rs`.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// A client loop's call: its k-th request; Err says why it failed.
pub type Call = Box<dyn Fn(&ureq::Agent, u64) -> Result<(), String> + Send + Sync>;

/// When a timed operation ran.
pub struct Span {
    /// The gap's window opens here (the kill, or the first stop).
    pub disturbed: Instant,
    /// The timed part starts here (the first command).
    pub started: Instant,
    pub ended: Instant,
    /// What happened on the way, for the log.
    pub detail: String,
}

/// What one client loop saw.
pub struct Seen {
    pub name: &'static str,
    /// None when the loop did not succeed again within RECOVERY_MAX.
    pub gap_ms: Option<f64>,
    pub ok: usize,
    pub failed: u64,
    pub first_failure: Option<String>,
}

/// One replacement or rolling restart.
pub struct Trial {
    /// From `Span::started` to `Span::ended`.
    pub ms: f64,
    pub seen: Vec<Seen>,
}

#[derive(Default)]
struct Record {
    successes: Mutex<Vec<Instant>>,
    failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
}

/// Stops the loops when dropped: on an early return and on a panic of the
/// operation too, or the scope would wait for them forever.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

pub fn run(settings: &Settings, report: &mut Report) {
    let mut cluster = Cluster::start(cluster_options(false));
    cluster.wait_for_leader(Duration::from_secs(30));
    cluster.wait_for_servers(&[true, true, true], Duration::from_secs(30));
    let mut etcd = Etcd::start(5)
        .map_err(|e| report.note(format!("membership: etcd did not start: {e}")))
        .ok();
    let trials = if settings.quick { 2 } else { 5 };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut changed = [Instant::now(); 2];
    for t in 0..trials {
        settle(&mut changed[0]);
        let trial =
            replace::raftlb(&mut cluster, report).inspect_err(|_| eprintln!("{}", cluster.logs()));
        keep(
            trial,
            &mut ours,
            &format!("replace trial {t} raftlb"),
            report,
        );
        if let Some(etcd) = etcd.as_mut() {
            settle(&mut changed[1]);
            let trial = replace::etcd(etcd, report);
            keep(
                trial,
                &mut theirs,
                &format!("replace trial {t} etcd"),
                report,
            );
        }
    }
    replace_rows(&ours, &theirs, report);
    let restarts = if settings.quick { 1 } else { 3 };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for t in 0..restarts {
        let trial =
            rolling::raftlb(&mut cluster, report).inspect_err(|_| eprintln!("{}", cluster.logs()));
        keep(
            trial,
            &mut ours,
            &format!("rolling restart {t} raftlb"),
            report,
        );
        if let Some(etcd) = etcd.as_mut() {
            let trial = rolling::etcd(etcd);
            keep(
                trial,
                &mut theirs,
                &format!("rolling restart {t} etcd"),
                report,
            );
        }
    }
    rolling_rows(&ours, &theirs, report);
}

/// Waits until SETTLE has passed since `changed` (a system's start or last
/// change), then marks now as its next change.
fn settle(changed: &mut Instant) {
    std::thread::sleep(SETTLE.saturating_sub(changed.elapsed()));
    *changed = Instant::now();
}

/// Keeps a trial's figures; a failed trial is noted and left out.
fn keep(trial: Result<Trial, String>, into: &mut Vec<Trial>, name: &str, report: &mut Report) {
    match trial {
        Ok(t) => {
            for s in t.seen.iter().filter(|s| s.failed > 0) {
                let why = s.first_failure.as_deref().unwrap_or("?");
                report.note(format!(
                    "{name}: {} of {} {} failed; the first: {why}",
                    s.failed,
                    s.failed + s.ok as u64,
                    s.name
                ));
            }
            into.push(t);
        }
        Err(e) => report.note(format!("{name} failed: {e}")),
    }
}

/// Runs `loops` while `operation` runs; then waits (bounded) until each loop
/// has succeeded after the operation's end, and stops them.
pub fn under_load(
    loops: Vec<(&'static str, Call)>,
    operation: impl FnOnce() -> Result<Span, String>,
) -> Result<Trial, String> {
    let records: Vec<Record> = loops.iter().map(|_| Record::default()).collect();
    let stop = AtomicBool::new(false);
    let begun = Instant::now();
    let span = std::thread::scope(|scope| {
        let _stop = StopOnDrop(&stop);
        for ((_, call), record) in loops.iter().zip(&records) {
            let stop = &stop;
            scope.spawn(move || client_loop(call, record, stop));
        }
        std::thread::sleep(LEAD_IN);
        let span = operation()?;
        let recovered = || {
            let after = |r: &Record| lock(&r.successes).last().is_some_and(|t| *t > span.ended);
            records.iter().all(after).then_some(())
        };
        // A loop that never recovers shows as such in its gap.
        let _ = wait("the clients to succeed again", RECOVERY_MAX, recovered);
        Ok::<Span, String>(span)
    })?;
    let seen: Vec<Seen> = loops
        .iter()
        .zip(&records)
        .map(|((name, _), r)| {
            let successes = lock(&r.successes);
            // A loop with no success before the operation (a lead-in without
            // a leader) waits from its start.
            let since: Vec<Instant> = std::iter::once(begun)
                .chain(successes.iter().copied())
                .collect();
            Seen {
                name,
                gap_ms: gap_ms(&since, span.disturbed, span.ended),
                ok: successes.len(),
                failed: r.failed.load(Ordering::Relaxed),
                first_failure: lock(&r.first_failure).clone(),
            }
        })
        .collect();
    let gaps: Vec<String> = (seen.iter())
        .map(|s| {
            format!(
                "{} gap {:?} ms, {} failed",
                s.name,
                s.gap_ms.map(|g| g.round()),
                s.failed
            )
        })
        .collect();
    eprintln!("bench: membership: {}; {}", span.detail, gaps.join(", "));
    Ok(Trial {
        ms: span.ended.duration_since(span.started).as_secs_f64() * 1000.0,
        seen,
    })
}

/// Calls `call` until told to stop, recording each success and counting failures.
fn client_loop(call: &Call, record: &Record, stop: &AtomicBool) {
    let agent = http::agent(CALL_TIMEOUT);
    for k in 0..CALLS_MAX {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match call(&agent, k) {
            Ok(()) => lock(&record.successes).push(Instant::now()),
            Err(reason) => {
                record.failed.fetch_add(1, Ordering::Relaxed);
                lock(&record.first_failure).get_or_insert(reason);
                // A refused call comes back at once: do not spin on it.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// "p50 …, max … (n trials)" of the trials' times.
fn times(trials: &[Trial]) -> String {
    let ms: Vec<f64> = trials.iter().map(|t| t.ms).collect();
    let plural = if ms.len() == 1 { "" } else { "s" };
    format!(
        "p50 {:.0} ms, max {:.0} ms ({} trial{plural})",
        percentile(&ms, 50),
        percentile(&ms, 100),
        ms.len()
    )
}

fn p50_ms(trials: &[Trial]) -> f64 {
    percentile(&trials.iter().map(|t| t.ms).collect::<Vec<f64>>(), 50)
}

/// Loop `name`'s gaps (a loop that did not recover counts as RECOVERY_MAX),
/// how many did not recover, its failed and total calls.
fn loop_figures(trials: &[Trial], name: &str) -> (Vec<f64>, usize, u64, u64) {
    let seen: Vec<&Seen> = trials
        .iter()
        .flat_map(|t| t.seen.iter().filter(|s| s.name == name))
        .collect();
    let cap_ms = RECOVERY_MAX.as_secs_f64() * 1000.0;
    let gaps = seen.iter().map(|s| s.gap_ms.unwrap_or(cap_ms)).collect();
    let lost = seen.iter().filter(|s| s.gap_ms.is_none()).count();
    let failed = seen.iter().map(|s| s.failed).sum();
    let calls = seen.iter().map(|s| s.failed + s.ok as u64).sum();
    (gaps, lost, failed, calls)
}

/// "gap p50 … ms, max … ms; 0 of 1,234 failed".
fn gaps(trials: &[Trial], name: &str) -> String {
    let (gaps, lost, failed, calls) = loop_figures(trials, name);
    let mut s = format!(
        "gap p50 {:.0} ms, max {:.0} ms; {failed} of {calls} failed",
        percentile(&gaps, 50),
        percentile(&gaps, 100)
    );
    if lost > 0 {
        s += &format!(" ({lost} did not recover within {RECOVERY_MAX:?})");
    }
    s
}

fn gap_p50(trials: &[Trial], name: &str) -> f64 {
    percentile(&loop_figures(trials, name).0, 50)
}

fn failed(trials: &[Trial], name: &str) -> u64 {
    loop_figures(trials, name).2
}

fn replace_rows(ours: &[Trial], theirs: &[Trial], report: &mut Report) {
    report.row(
        Row::new(
            SECTION,
            "replace a SIGKILLed follower whose data dir is gone: `raftlb member replace` → the new node a voter on every member and caught up",
            times(ours),
        )
        .against(format!(
            "etcd (member remove, add --learner, start, promote → a linearizable read on it): {}",
            times(theirs)
        ))
        .ratio(p50_ms(ours), p50_ms(theirs), "p50, raftlb ÷ etcd"),
    );
    report.row(
        Row::new(
            SECTION,
            "replace: client gap, 100-byte writes via a surviving member (from the kill)",
            gaps(ours, "writes"),
        )
        .against(format!("etcd puts: {}", gaps(theirs, "writes")))
        .ratio(
            gap_p50(ours, "writes"),
            gap_p50(theirs, "writes"),
            "p50, raftlb ÷ etcd",
        ),
    );
    report.row(Row::new(
        SECTION,
        "replace: client gap, prime requests via a surviving member",
        gaps(ours, "primes"),
    ));
}

fn rolling_rows(ours: &[Trial], theirs: &[Trial], report: &mut Report) {
    report.row(
        Row::new(
            SECTION,
            "rolling restart of 5 members, leader last, leadership handed over, each caught up before the next: time",
            times(ours),
        )
        .against(format!("etcd: {}", times(theirs)))
        .ratio(p50_ms(ours), p50_ms(theirs), "p50, raftlb ÷ etcd"),
    );
    let ran = !ours.is_empty();
    report.row(
        Row::new(
            SECTION,
            "rolling restart: 100-byte writes with the CLI's failover (`raftlb note set`)",
            gaps(ours, "writes"),
        )
        .against(format!(
            "etcd puts, next member when one is down: {}",
            gaps(theirs, "writes")
        ))
        .ratio(
            gap_p50(ours, "writes"),
            gap_p50(theirs, "writes"),
            "gap p50, raftlb ÷ etcd",
        )
        .goal("0 failed writes", ran && failed(ours, "writes") == 0),
    );
    report.row(
        Row::new(
            SECTION,
            "rolling restart: prime requests with the CLI's failover (`raftlb prime`)",
            gaps(ours, "primes"),
        )
        .goal("0 failed primes", ran && failed(ours, "primes") == 0),
    );
}
