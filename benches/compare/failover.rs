//! Failover, raftlb and etcd measured the same way, their trials alternating:
//! SIGKILL the leader; poll every live member every 5 ms; the failover time is
//! from the kill until every live member names one and the same new leader.
//! Then the killed member is restarted from its data dir, and the next trial
//! waits until it has caught up with the leader's log.
//!
//! Meanwhile client loops run through a surviving member (the one after the
//! leader), each recording when its calls succeed: raftlb note writes and etcd
//! puts (100 bytes), and raftlb prime requests, which never need the leader.
//! The client-visible gap is the longest wait between two successes from the
//! last success before the kill to the first one after the new leader was
//! agreed. (Not simply the first success after the kill minus the last before
//! it: a write the old leader committed just before dying can still be
//! answered a few ms after the kill, and would hide the outage behind it.)
//! Every call has a 1 s timeout and a failed call is sent
//! again at once, as a client with a deadline would: a write lost with the old
//! leader costs the same wait on both sides.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::etcd::Etcd;
use crate::http;
use crate::support::Cluster;
use crate::table::{Report, Row};
use crate::Settings;

/// Each client call's timeout; a failed or timed-out call is sent again.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// The members are polled this often while they elect.
pub const POLL: Duration = Duration::from_millis(5);
/// The client loops run this long before the kill, to have a success before it.
const LEAD_IN: Duration = Duration::from_millis(300);
/// Bounds: an election, a client loop's recovery, a restarted member's catch-up.
const ELECTION_MAX: Duration = Duration::from_secs(20);
const RECOVERY_MAX: Duration = Duration::from_secs(15);
const CATCH_UP_MAX: Duration = Duration::from_secs(30);
const CALLS_MAX: u64 = 1_000_000;

/// A client loop's call: its k-th request; true when it succeeded.
pub type Call = Box<dyn Fn(&ureq::Agent, u64) -> bool + Send + Sync>;

/// What a trial needs of a replicated system.
pub trait Members {
    fn size(&self) -> usize;
    fn agreed_leader(&self) -> Option<usize>;
    /// How far member i has applied its log.
    fn log_index(&self, i: usize) -> Option<u64>;
    fn kill(&mut self, i: usize);
    fn restart(&mut self, i: usize) -> Result<(), String>;
    /// The client loops through member `via`: (name, call).
    fn loops(&self, via: usize) -> Vec<(&'static str, Call)>;
}

/// 100 bytes unique to the call.
pub fn value(k: u64) -> String {
    format!("{k:>20} {}", "v".repeat(79))
}

impl Members for Cluster {
    fn size(&self) -> usize {
        self.nodes.len()
    }
    fn agreed_leader(&self) -> Option<usize> {
        Cluster::agreed_leader(self)
    }
    fn log_index(&self, i: usize) -> Option<u64> {
        self.status(i).map(|s| s.applied_index)
    }
    fn kill(&mut self, i: usize) {
        self.kill_node(i);
    }
    fn restart(&mut self, i: usize) -> Result<(), String> {
        self.restart_node(i);
        Ok(())
    }
    fn loops(&self, via: usize) -> Vec<(&'static str, Call)> {
        let note = self.url(via, "/note");
        let prime = self.url(via, "/100");
        let write: Call = Box::new(move |agent, k| {
            http::send(agent, "PUT", &note, value(k).as_bytes())
                .is_some_and(|(code, _)| code == 200)
        });
        let read: Call = Box::new(move |agent, _| {
            http::get(agent, &prime).is_some_and(|(code, body)| code == 200 && body == "541")
        });
        vec![("writes", write), ("primes", read)]
    }
}

impl Members for Etcd {
    fn size(&self) -> usize {
        Etcd::size(self)
    }
    fn agreed_leader(&self) -> Option<usize> {
        Etcd::agreed_leader(self)
    }
    fn log_index(&self, i: usize) -> Option<u64> {
        self.status(i).map(|s| s.raft_index)
    }
    fn kill(&mut self, i: usize) {
        Etcd::kill(self, i);
    }
    fn restart(&mut self, i: usize) -> Result<(), String> {
        Etcd::restart(self, i)
    }
    fn loops(&self, via: usize) -> Vec<(&'static str, Call)> {
        let url = format!("{}/v3/kv/put", self.url(via));
        let write: Call = Box::new(move |agent, k| {
            let body = put_body(k);
            http::send(agent, "POST", &url, body.as_bytes()).is_some_and(|(code, _)| code == 200)
        });
        vec![("writes", write)]
    }
}

/// The JSON of an etcd put (the gateway's base64) of `value(k)` at key
/// "failover".
pub fn put_body(k: u64) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        r#"{{"key":"{}","value":"{}"}}"#,
        b64("failover"),
        b64(&value(k))
    )
}

/// One trial's figures, in ms: the failover and each loop's (name, gap).
pub struct Trial {
    failover_ms: f64,
    gaps_ms: Vec<(&'static str, Option<f64>)>,
}

pub fn run(cluster: &mut Cluster, etcd: &mut Etcd, settings: &Settings, report: &mut Report) {
    let [ours, theirs] = alternate(
        [("raftlb", cluster), ("etcd", etcd)],
        settings.trials,
        report,
    );
    rows(&ours, &theirs, report);
}

/// `trials` trials of each system, taking turns, so that both see the same
/// state of the machine; a failed trial is noted and left out.
pub fn alternate<const K: usize>(
    mut systems: [(&str, &mut dyn Members); K],
    trials: usize,
    report: &mut Report,
) -> [Vec<Trial>; K] {
    let mut out: [Vec<Trial>; K] = std::array::from_fn(|_| Vec::new());
    for t in 0..trials {
        for ((name, system), out) in systems.iter_mut().zip(out.iter_mut()) {
            match trial(*system) {
                Ok(r) => {
                    eprintln!(
                        "bench: failover trial {t} {name}: {:.0} ms, gaps {:?}",
                        r.failover_ms, r.gaps_ms
                    );
                    out.push(r);
                }
                Err(e) => report.note(format!("failover trial {t} of {name} failed: {e}")),
            }
        }
    }
    out
}

/// Each trial's failover time, in ms.
pub fn failover_times(trials: &[Trial]) -> Vec<f64> {
    trials.iter().map(|t| t.failover_ms).collect()
}

fn trial(system: &mut dyn Members) -> Result<Trial, String> {
    let old = wait("a leader", ELECTION_MAX, || system.agreed_leader())?;
    let via = (old + 1) % system.size();
    let loops = system.loops(via);
    let successes: Vec<Mutex<Vec<Instant>>> =
        loops.iter().map(|_| Mutex::new(Vec::new())).collect();
    let stop = AtomicBool::new(false);
    let measured = std::thread::scope(|scope| {
        for ((_, call), record) in loops.iter().zip(&successes) {
            let stop = &stop;
            scope.spawn(move || client_loop(call, record, stop));
        }
        let result = kill_and_watch(system, old, &successes);
        stop.store(true, Ordering::Relaxed);
        result
    });
    system.restart(old)?;
    let caught_up = || {
        let leader = system.agreed_leader()?;
        let target = system.log_index(leader)?;
        (system.log_index(old)? >= target).then_some(())
    };
    wait("the restarted member to catch up", CATCH_UP_MAX, caught_up)?;
    let (failover_ms, killed_at, agreed_at) = measured?;
    let gaps_ms = loops
        .iter()
        .zip(&successes)
        .map(|((name, _), record)| (*name, gap_ms(&lock(record), killed_at, agreed_at)))
        .collect();
    Ok(Trial {
        failover_ms,
        gaps_ms,
    })
}

/// Kills `old` and times the new leader; then waits (bounded) until every
/// client loop has succeeded after that. Returns (ms, when it was killed,
/// when the new leader was agreed).
fn kill_and_watch(
    system: &mut dyn Members,
    old: usize,
    successes: &[Mutex<Vec<Instant>>],
) -> Result<(f64, Instant, Instant), String> {
    std::thread::sleep(LEAD_IN);
    let killed_at = Instant::now();
    system.kill(old);
    let mut new_leader = None;
    while new_leader.is_none() {
        if killed_at.elapsed() > ELECTION_MAX {
            return Err(format!("no new leader in {ELECTION_MAX:?}"));
        }
        std::thread::sleep(POLL);
        new_leader = system.agreed_leader().filter(|l| *l != old);
    }
    let agreed_at = Instant::now();
    let failover_ms = agreed_at.duration_since(killed_at).as_secs_f64() * 1000.0;
    let recovered = || {
        successes
            .iter()
            .all(|s| lock(s).last().is_some_and(|t| *t > agreed_at))
    };
    // A loop that never recovers shows as a gap of "more than RECOVERY_MAX".
    let _ = wait("the clients to succeed again", RECOVERY_MAX, || {
        recovered().then_some(())
    });
    Ok((failover_ms, killed_at, agreed_at))
}

/// Calls `call` until told to stop (or CALLS_MAX calls), recording each success.
fn client_loop(call: &Call, record: &Mutex<Vec<Instant>>, stop: &AtomicBool) {
    let agent = http::agent(CALL_TIMEOUT);
    for k in 0..CALLS_MAX {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if call(&agent, k) {
            lock(record).push(Instant::now());
        } else {
            // A refused call comes back at once: do not spin on it.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The longest wait between consecutive successes from the last one before
/// `killed_at` to the first one after `agreed_at`; None when either is missing.
pub fn gap_ms(successes: &[Instant], killed_at: Instant, agreed_at: Instant) -> Option<f64> {
    let first = successes.iter().rposition(|t| *t <= killed_at)?;
    let last = first + successes[first..].iter().position(|t| *t > agreed_at)?;
    successes[first..=last]
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).as_secs_f64() * 1000.0)
        .max_by(f64::total_cmp)
}

/// Polls `check` every POLL until it gives a value, at most `limit`.
pub fn wait<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if start.elapsed() > limit {
            return Err(format!("no {what} within {limit:?}"));
        }
        std::thread::sleep(POLL);
    }
}

/// The `p`-th percentile (nearest rank) of `values`; NaN when empty.
pub fn percentile(values: &[f64], p: usize) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) * p).div_ceil(100).min(v.len() - 1)]
}

/// "p50 …, p90 …, max … (n trials)".
pub fn spread(values: &[f64]) -> String {
    format!(
        "p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms ({} trials)",
        percentile(values, 50),
        percentile(values, 90),
        percentile(values, 100),
        values.len()
    )
}

/// The gaps of loop `name` over the trials, and how many never closed: a
/// loop that never recovered counts as RECOVERY_MAX.
fn gap_values(trials: &[Trial], name: &str) -> (Vec<f64>, usize) {
    let all: Vec<Option<f64>> = trials
        .iter()
        .flat_map(|t| {
            t.gaps_ms
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, g)| *g)
        })
        .collect();
    let lost = all.iter().filter(|g| g.is_none()).count();
    let cap_ms = RECOVERY_MAX.as_secs_f64() * 1000.0;
    (all.iter().map(|g| g.unwrap_or(cap_ms)).collect(), lost)
}

fn gaps(trials: &[Trial], name: &str) -> String {
    let (values, lost) = gap_values(trials, name);
    let mut s = format!(
        "p50 {:.0} ms, max {:.0} ms",
        percentile(&values, 50),
        percentile(&values, 100)
    );
    if lost > 0 {
        s += &format!(" ({lost} never recovered within {RECOVERY_MAX:?})");
    }
    s
}

fn rows(ours: &[Trial], theirs: &[Trial], report: &mut Report) {
    let (a, b) = (failover_times(ours), failover_times(theirs));
    let (a50, b50) = (percentile(&a, 50), percentile(&b, 50));
    report.row(
        Row::new(
            "failover",
            "SIGKILL of the leader → all live members agree on a new one",
            spread(&a),
        )
        .against(format!("etcd (hb 50 ms, election 300 ms): {}", spread(&b)))
        .ratio(a50, b50, "p50, raftlb ÷ etcd")
        .goal("p50 below etcd's (< 1)", a50 < b50),
    );
    let gap_p50 = |t: &[Trial]| percentile(&gap_values(t, "writes").0, 50);
    report.row(
        Row::new(
            "failover",
            "client gap, 100-byte writes via a surviving member",
            gaps(ours, "writes"),
        )
        .against(format!("etcd puts: {}", gaps(theirs, "writes")))
        .ratio(gap_p50(ours), gap_p50(theirs), "p50, raftlb ÷ etcd"),
    );
    report.row(Row::new(
        "failover",
        "client gap, prime requests via a surviving member",
        gaps(ours, "primes"),
    ));
}
