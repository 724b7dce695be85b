//! The one summary a chaos run ends with.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use raftlb::lincheck::Verdict;

use crate::load::PrimeTally;
use crate::nemesis::operator::MemberTally;
use crate::nemesis::{Failover, Fault};
use crate::support::history::Tally;

pub struct Summary {
    pub seed: u64,
    pub secs: u64,
    pub net: String,
    pub power: String,
    pub done: BTreeMap<Fault, usize>,
    pub members: MemberTally,
    /// The voters of the configuration in force at the end.
    pub final_voters: Vec<String>,
    pub failovers: Vec<Failover>,
    pub stepped_down: usize,
    pub primes: PrimeTally,
    pub notes: Tally,
    pub verdict: Result<Verdict, raftlb::lincheck::CheckError>,
    pub check_took: Duration,
    pub lost: usize,
    pub terms_with_a_leader: usize,
    pub two_leaders_seen: bool,
    /// The index every node applied after the heal, when they all did.
    pub converged: Option<u64>,
    pub violations: Vec<String>,
}

/// The value at quantile `q` of sorted `ms` (nearest rank).
fn quantile(ms: &[u128], q: f64) -> u128 {
    let rank = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len());
    ms[rank - 1]
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "\n=== chaos summary: {} s, seed {} ===",
            self.secs, self.seed
        )?;
        writeln!(f, "network faults: {}", self.net)?;
        writeln!(f, "power cuts: {}", self.power)?;
        writeln!(f, "faults done:")?;
        for (fault, count) in &self.done {
            writeln!(f, "  {count:4}  {}", fault.describe())?;
        }
        writeln!(
            f,
            "membership changes (done = 200; busy = 409, another change pending; \
             refused = other 4xx; unsure = 503 or no answer, configuration read back):"
        )?;
        for (kind, a) in &self.members.by_kind {
            writeln!(
                f,
                "  {:4} done {:4} busy {:4} refused {:4} unsure  (slowest {:5} ms)  {kind}",
                a.done,
                a.busy,
                a.refused,
                a.unsure,
                a.slowest.as_millis()
            )?;
        }
        writeln!(
            f,
            "final configuration: voters {}",
            self.final_voters.join(" ")
        )?;
        let p = &self.primes;
        let n = &self.notes;
        writeln!(
            f,
            "operations (refused = sent to a node not running: killed, or a spare or removed node; never happened):"
        )?;
        writeln!(
            f,
            "  prime lookups  {:6} ok  {:5} failed (503/502/timeout)  {:5} refused  {} wrong",
            p.ok,
            p.failed,
            p.refused,
            p.wrong.len()
        )?;
        writeln!(
            f,
            "  note writes    {:6} ok  {:5} unknown (503/timeout)    {:5} refused",
            n.ok_writes, n.unknown_writes, n.refused
        )?;
        writeln!(
            f,
            "  note reads     {:6} ok  {:5} failed (503/timeout)",
            n.reads, n.unanswered_reads
        )?;
        let mut ms: Vec<u128> = self.failovers.iter().map(|x| x.took.as_millis()).collect();
        ms.sort_unstable();
        if ms.is_empty() {
            writeln!(f, "failovers: none")?;
        } else {
            let mut causes: BTreeMap<Fault, usize> = BTreeMap::new();
            for x in &self.failovers {
                *causes.entry(x.fault).or_default() += 1;
            }
            let causes: Vec<String> = causes
                .iter()
                .map(|(fault, c)| format!("{c} after {}", fault.describe()))
                .collect();
            writeln!(
                f,
                "failovers: {} (fault until the other nodes agree on a new leader): \
                 p50 {} ms, p90 {} ms, max {} ms\n  all: {:?} ms\n  causes: {}",
                ms.len(),
                quantile(&ms, 0.5),
                quantile(&ms, 0.9),
                ms[ms.len() - 1],
                ms,
                causes.join("; ")
            )?;
        }
        writeln!(
            f,
            "leaders back from a pause or a partition that stepped down: {}",
            self.stepped_down
        )?;
        writeln!(
            f,
            "one leader per term: {} terms had a leader seen, {}",
            self.terms_with_a_leader,
            if self.two_leaders_seen {
                "VIOLATED"
            } else {
                "never two"
            }
        )?;
        match self.converged {
            Some(index) => writeln!(f, "after the heal: every node applied index {index}")?,
            None => writeln!(f, "after the heal: the nodes did NOT converge")?,
        }
        match &self.verdict {
            Ok(Verdict::Linearizable { ops }) => writeln!(
                f,
                "note history: linearizable ({ops} operations, checked in {} ms)",
                self.check_took.as_millis()
            )?,
            Ok(Verdict::NotLinearizable { .. }) => writeln!(f, "note history: NOT linearizable")?,
            Err(e) => writeln!(f, "note history: not checked: {e}")?,
        }
        writeln!(f, "acknowledged writes lost: {}", self.lost)?;
        if self.violations.is_empty() {
            write!(f, "verdict: PASS (no safety or liveness violation)")
        } else {
            writeln!(f, "verdict: FAIL, {} violation(s):", self.violations.len())?;
            for v in &self.violations {
                writeln!(f, "  - {v}")?;
            }
            write!(f, "replay the choices with CHAOS_SEED={}", self.seed)
        }
    }
}
