//! The balancing policy: which server a prime request goes to. Pure: no clock,
//! no socket, no lock; the caller passes the time (milliseconds on any
//! monotonic scale), the agreed table's view of each server, and tells the
//! policy when a request starts and how it ended.
//!
//! Each request goes where its expected completion time is least:
//!
//! ```text
//! score(s, c) = slowdown(s) x table(s) x errors(s) x work_ahead(s, c)
//! work_ahead(s, c) = c + sum over this node's requests j in flight at s of min(cost_j, c)
//! ```
//!
//! - `work_ahead` is the completion time of a request of cost `c` on a server
//!   that shares its CPU among its requests (processor sharing, as a worker's
//!   threads do) if only this node's requests ran there: a request in flight
//!   delays it by its own cost or by `c`, whichever is less. So a cheap
//!   request goes where the fewest are in flight (least connections: HAProxy
//!   `leastconn`, nginx `least_conn`), an expensive one where the least work
//!   is (LVS's shortest expected delay, `(active + 1) / weight`, with the `+1`
//!   the request's own cost). It moves with every decision, so between two
//!   reports a burst spreads instead of landing where a report looked good.
//! - `slowdown` is milliseconds of answer time per unit of the request's own
//!   cost over this node's recent answers: the ratio of their answer times'
//!   sum to their costs' sum, both decaying with time, so that an answer
//!   counts as much as its cost (a cheap answer's queue wait divided by its
//!   tiny cost is noise a thousand times the signal). It is an average of
//!   recent answers as Finagle's and Linkerd's peak EWMA (which also jump up
//!   at once on a slow answer; here the jump is a knob, `slowdown_peak`, off
//!   by default: see `Params`). An answer's time includes the queue it met,
//!   so the score is their `latency x (pending + 1)` generalised to costs: it
//!   learns a machine's speed, a neighbour taking its CPU, and the other
//!   nodes' requests there, none of which this node's in-flight count shows.
//!   It is the inverse of Envoy's client-side
//!   weighted round robin weight fed by ORCA (`qps / utilization`), and of
//!   LVS's `weight`, measured instead of configured. As its last answer ages
//!   it relaxes toward the best server's slowdown, so a server that was slow
//!   is tried again and re-measured (a neighbour that left) rather than shunned
//!   on old news.
//! - `table` is the agreed load (SPEC's `cpu + wait`, out of 200):
//!   `1 + table_weight x (cpu + wait)/200`, weighted down as the report ages.
//!   It is what shows other nodes' load and a machine held back by a quota or
//!   a neighbour (the daemon's `cpu` counts a cgroup against its quota, so a
//!   throttled machine reads full, not idle; `wait` is the share of runnable
//!   time spent not running). The factor is a small multiplier on a score
//!   driven by this node's own in-flight work, so the five nodes, which all
//!   read the same table, do not all move to the same server at each report.
//!   (With `wait` alone the simulator's p99s were the same within 3 %.)
//! - `errors` is `1 + error_weight x penalty`: each failure adds one to a penalty
//!   that decays exponentially.
//!
//! Ties (equal scores, as at start) are broken at random from a seeded
//! generator, so that five nodes starting together do not all pick the first
//! server.

pub mod observed;

use std::collections::BTreeMap;

use crate::raft::Rng;
use observed::{Observed, Slowdown};

/// One live-or-dead server as the agreed table shows it.
#[derive(Clone, Debug)]
pub struct Candidate<'a> {
    pub id: &'a str,
    pub alive: bool,
    /// Reported CPU use, 0..100.
    pub cpu: f64,
    /// Reported share of runnable time spent waiting, 0..100.
    pub wait: f64,
    /// How old the report is on this node, in ms.
    pub report_age_ms: f64,
}

/// The policy's knobs; `Params::default()` is the tuned choice (see the
/// balancing simulator, `tests/balance_sim`).
#[derive(Clone, Debug)]
pub struct Params {
    /// Time constant of the slowdown's average, in ms.
    pub slowdown_decay_ms: f64,
    /// How far the slowdown jumps toward a higher sample at once (1: all the
    /// way, Finagle's peak EWMA; 0: a plain EWMA).
    pub slowdown_peak: f64,
    /// Choose between two random live servers by score (power of two
    /// choices) rather than the least score of all.
    pub two_choices: bool,
    /// How fast a server's slowdown relaxes toward the best server's once its
    /// answers stop, in ms.
    pub slowdown_stale_ms: f64,
    /// Weight of the agreed load, `(cpu + wait)/200`, in the score (0 ignores
    /// the table).
    pub table_weight: f64,
    /// A report this old counts 1/e as much as a fresh one, in ms.
    pub report_stale_ms: f64,
    /// How much one recent failure multiplies the score by, less one.
    pub error_weight: f64,
    /// Time constant of the error penalty, in ms.
    pub error_decay_ms: f64,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            slowdown_decay_ms: 1000.0,
            // A full jump made every server look as slow as its slowest recent
            // answer (a sample is noisy: a cost estimated from N, requests that
            // arrive after it); in the simulator p99 was 10-40 % worse than with
            // none (tests/balance_sim, BALANCE_PARAMS=peak=1).
            slowdown_peak: 0.0,
            two_choices: false,
            slowdown_stale_ms: 3000.0,
            table_weight: 0.5,
            report_stale_ms: 2000.0,
            error_weight: 4.0,
            error_decay_ms: 5000.0,
        }
    }
}

/// One request's record from `started` to `finished`.
#[derive(Clone, Debug)]
pub struct Ticket {
    pub server: String,
    pub cost: f64,
}

/// The policy of one node: what it observed of each server.
#[derive(Clone, Debug)]
pub struct Balancer {
    params: Params,
    rng: Rng,
    servers: BTreeMap<String, Observed>,
}

/// Servers remembered; more means ids that came and went, and the memory is
/// rebuilt from scratch (it is only an optimisation of the choice).
const SERVERS_MAX: usize = 1024;
/// The smallest cost counted, so a zero or negative estimate cannot divide by
/// zero or make a request free.
const COST_MIN: f64 = 1e-3;

impl Balancer {
    pub fn new(params: Params, seed: u64) -> Balancer {
        Balancer {
            params,
            rng: Rng::new(seed),
            servers: BTreeMap::new(),
        }
    }

    /// The live candidates' indices in the order to try them for a request of
    /// `cost`: the least score first; equal scores in random order.
    pub fn rank(&mut self, candidates: &[Candidate], cost: f64, now_ms: f64) -> Vec<usize> {
        let cost = cost.max(COST_MIN);
        let best = self.best_slowdown(candidates);
        let mut scored: Vec<(f64, u64, usize)> = candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| c.alive)
            .map(|(i, c)| {
                (
                    self.score_with(c, cost, now_ms, best),
                    self.rng.next_u64(),
                    i,
                )
            })
            .collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        if self.params.two_choices && scored.len() > 2 {
            let a = self.rng.range(0, scored.len() as u64) as usize;
            let b = (a + 1 + self.rng.range(0, scored.len() as u64 - 1) as usize) % scored.len();
            let first = scored.remove(a.min(b));
            scored.insert(0, first);
        }
        scored.into_iter().map(|(_, _, i)| i).collect()
    }

    /// The expected completion time of a request of `cost` on `candidate`, in
    /// the units of the slowdown (ms once answers were seen), for `/metrics`.
    pub fn score(&self, candidates: &[Candidate], which: usize, cost: f64, now_ms: f64) -> f64 {
        let best = self.best_slowdown(candidates);
        self.score_with(&candidates[which], cost.max(COST_MIN), now_ms, best)
    }

    /// A request of `cost` was sent to `server`.
    pub fn started(&mut self, server: &str, cost: f64) -> Ticket {
        let cost = cost.max(COST_MIN);
        if self.servers.len() >= SERVERS_MAX && !self.servers.contains_key(server) {
            self.servers.clear();
        }
        self.servers
            .entry(server.to_string())
            .or_default()
            .start(cost);
        Ticket {
            server: server.to_string(),
            cost,
        }
    }

    /// The request of `ticket` ended after `service_ms`, answered (`ok`) or not.
    pub fn finished(&mut self, ticket: Ticket, service_ms: f64, ok: bool, now_ms: f64) {
        let params = &self.params;
        let Some(observed) = self.servers.get_mut(&ticket.server) else {
            return;
        };
        observed.end(ticket.cost);
        if !ok {
            observed.errors.bump(now_ms, params.error_decay_ms);
            return;
        }
        // Per unit of its own cost, not of the work ahead of it: service
        // time has a part that does not grow with the work ahead (the round
        // trip, the HTTP exchange; all of it for a cheap N), and dividing that
        // by the work ahead made a busy server look faster the busier it was,
        // so one server drew most of the load (89 % of N=100's in the bench).
        let service_ms = service_ms.max(0.0);
        match &mut observed.slowdown {
            Some(s) => s.observe(
                service_ms,
                ticket.cost,
                now_ms,
                params.slowdown_decay_ms,
                params.slowdown_peak,
            ),
            None => observed.slowdown = Some(Slowdown::new(service_ms, ticket.cost, now_ms)),
        }
    }

    /// The least observed slowdown among the live candidates: what a server
    /// with no recent answers is assumed to be.
    fn best_slowdown(&self, candidates: &[Candidate]) -> f64 {
        candidates
            .iter()
            .filter(|c| c.alive)
            .filter_map(|c| self.servers.get(c.id)?.slowdown.as_ref())
            .map(Slowdown::value)
            .min_by(f64::total_cmp)
            .unwrap_or(1.0)
    }

    fn score_with(&self, c: &Candidate, cost: f64, now_ms: f64, best: f64) -> f64 {
        let p = &self.params;
        let observed = self.servers.get(c.id);
        let slowdown = match observed.and_then(|o| o.slowdown.as_ref()) {
            Some(s) => {
                let fresh = (-s.age_ms(now_ms) / p.slowdown_stale_ms).exp();
                s.value() * fresh + best * (1.0 - fresh)
            }
            None => best,
        };
        let fresh_report = (-c.report_age_ms.max(0.0) / p.report_stale_ms).exp();
        let load = (c.cpu.clamp(0.0, 100.0) + c.wait.clamp(0.0, 100.0)) / 200.0;
        let table = 1.0 + p.table_weight * fresh_report * load;
        let (errors, work) = match observed {
            Some(o) => (
                1.0 + p.error_weight * o.errors.value(now_ms, p.error_decay_ms),
                o.work_ahead(cost),
            ),
            None => (1.0, cost),
        };
        slowdown * table * errors * work
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Vec<Candidate<'static>> {
        ["a", "b", "c"]
            .into_iter()
            .map(|id| Candidate {
                id,
                alive: true,
                cpu: 0.0,
                wait: 0.0,
                report_age_ms: 0.0,
            })
            .collect()
    }

    #[test]
    fn cheap_requests_go_where_fewest_are_in_flight_and_dear_ones_where_least_work_is() {
        let mut b = Balancer::new(Params::default(), 1);
        let servers = three();
        // a: one expensive request; b: two cheap ones; c: three cheap ones.
        b.started("a", 40.0);
        b.started("b", 1.0);
        b.started("b", 1.0);
        for _ in 0..3 {
            b.started("c", 1.0);
        }
        assert_eq!(b.rank(&servers, 1.0, 0.0), [0, 1, 2], "cheap: by count");
        assert_eq!(b.rank(&servers, 40.0, 0.0), [1, 2, 0], "dear: by work");
    }

    #[test]
    fn a_server_seen_slow_gets_less_and_is_retried_once_its_news_is_old() {
        let mut b = Balancer::new(Params::default(), 1);
        let servers = three();
        for (server, ms) in [("a", 4.0), ("b", 1.0), ("c", 1.0)] {
            let t = b.started(server, 1.0);
            b.finished(t, ms, true, 0.0);
        }
        // Two requests in flight on b and one on c still cost less than a's 4x.
        b.started("b", 1.0);
        b.started("b", 1.0);
        b.started("c", 1.0);
        assert_eq!(b.rank(&servers, 1.0, 10.0), [2, 1, 0]);
        // Long after its last answer, a is assumed as fast as the best.
        assert_eq!(b.rank(&servers, 1.0, 60_000.0)[0], 0);
    }

    #[test]
    fn one_cheap_answer_that_waited_long_does_not_make_a_server_shunned() {
        // Every server answers costly requests at 10 ms per unit; then a's
        // cheap request (0.1 units) comes back after 400 ms, queued behind
        // costly ones. b and c each have a costly request in flight, a none:
        // the next costly request belongs on a. (A mean of per-answer ratios
        // read a 4,000 there and sent everything elsewhere while a idled.)
        let mut b = Balancer::new(Params::default(), 1);
        let servers = three();
        for (i, server) in ["a", "b", "c"].into_iter().enumerate() {
            for k in 0..3 {
                let t = b.started(server, 30.0);
                b.finished(t, 300.0, true, f64::from(100 * k + i as u32));
            }
        }
        let t = b.started("a", 0.1);
        b.finished(t, 400.0, true, 400.0);
        b.started("b", 30.0);
        b.started("c", 30.0);
        assert_eq!(b.rank(&servers, 30.0, 410.0)[0], 0);
    }

    #[test]
    fn dead_servers_are_skipped_and_failures_push_a_server_down() {
        let mut b = Balancer::new(Params::default(), 1);
        let mut servers = three();
        servers[1].alive = false;
        assert_eq!(b.rank(&servers, 1.0, 0.0).len(), 2);
        let t = b.started("a", 1.0);
        b.finished(t, 0.0, false, 0.0);
        assert_eq!(b.rank(&servers, 1.0, 0.0), [2, 0]);
        assert!(b.score(&servers, 0, 1.0, 0.0) > b.score(&servers, 2, 1.0, 0.0));
        // The penalty fades.
        assert_eq!(b.rank(&servers, 1.0, 60_000.0).len(), 2);
        assert!(b.score(&servers, 0, 1.0, 60_000.0) < 1.01);
    }

    #[test]
    fn a_fresh_high_wait_report_weighs_more_than_a_stale_one() {
        let b = Balancer::new(Params::default(), 1);
        let mut servers = three();
        servers[0].wait = 90.0;
        let fresh = b.score(&servers, 0, 1.0, 0.0);
        servers[0].report_age_ms = 10_000.0;
        let stale = b.score(&servers, 0, 1.0, 0.0);
        assert!(fresh > stale && stale > b.score(&servers, 1, 1.0, 0.0));
    }

    #[test]
    fn equal_scores_are_broken_at_random_so_nodes_do_not_herd() {
        let firsts: std::collections::BTreeSet<usize> = (0..20)
            .map(|seed| Balancer::new(Params::default(), seed).rank(&three(), 1.0, 0.0)[0])
            .collect();
        assert_eq!(firsts.len(), 3, "every server comes first for some node");
    }
}
