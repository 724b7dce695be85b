//! Which server a prime request goes to: the policy of [`crate::balance`]
//! (least expected completion time), fed with the applied load table and this
//! node's clock, behind one lock, so that concurrent requests see each other's
//! choices and a burst between two reports spreads over the servers.
//!
//! A request takes an [`Attempt`] for each server it tries; dropping it tells
//! the policy how long the server took and whether it answered, which is what
//! the policy learns each server's speed and errors from.

use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use crate::balance::{Balancer, Candidate, Params, Ticket};
use crate::table::LoadTable;

/// The node's policy and the start of its clock.
pub struct Chooser {
    epoch: Instant,
    balancer: Mutex<Balancer>,
}

/// One request on one server, from the choice until it is dropped.
pub struct Attempt<'a> {
    chooser: &'a Chooser,
    ticket: Option<Ticket>,
    started: Instant,
    answered: bool,
}

impl Attempt<'_> {
    /// The server answered; otherwise the drop counts a failure.
    pub fn answered(&mut self) {
        self.answered = true;
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let now = Instant::now();
        let took_ms = now.duration_since(self.started).as_secs_f64() * 1000.0;
        let now_ms = self.chooser.ms(now);
        (self.chooser.lock()).finished(ticket, took_ms, self.answered, now_ms);
    }
}

impl Chooser {
    /// `seed` breaks ties between equal scores: nodes should differ, so that
    /// five nodes starting together do not all pick the same server.
    pub fn new(seed: u64) -> Chooser {
        Chooser {
            epoch: Instant::now(),
            balancer: Mutex::new(Balancer::new(Params::default(), seed)),
        }
    }

    /// The live servers of `table` (id, URL) in the order to try them for a
    /// request of `cost_ms`, and the attempt on the first; None when no
    /// server is alive. Ranking and starting happen under one lock.
    pub fn choose(
        &self,
        table: &LoadTable,
        cost_ms: f64,
        now: Instant,
    ) -> Option<(Vec<(String, String)>, Attempt<'_>)> {
        let (candidates, urls) = candidates(table, now);
        let mut balancer = self.lock();
        let order: Vec<(String, String)> = balancer
            .rank(&candidates, cost_ms, self.ms(now))
            .into_iter()
            .map(|i| (candidates[i].id.to_string(), urls[i].to_string()))
            .collect();
        let first = order.first()?;
        let ticket = balancer.started(&first.0, cost_ms);
        drop(balancer);
        let attempt = self.attempt(ticket);
        Some((order, attempt))
    }

    /// An attempt of a request of `cost_ms` on `server` (a retry after the
    /// first choice failed).
    pub fn start(&self, server: &str, cost_ms: f64) -> Attempt<'_> {
        let ticket = self.lock().started(server, cost_ms);
        self.attempt(ticket)
    }

    /// Each live server's score for a request of `cost_ms` now: its expected
    /// completion time in milliseconds (once it has answered), for `/metrics`.
    pub(crate) fn scores(
        &self,
        table: &LoadTable,
        cost_ms: f64,
        now: Instant,
    ) -> Vec<(String, f64)> {
        let (candidates, _) = candidates(table, now);
        let balancer = self.lock();
        let now_ms = self.ms(now);
        (candidates.iter().enumerate())
            .filter(|(_, c)| c.alive)
            .map(|(i, c)| {
                let score = balancer.score(&candidates, i, cost_ms, now_ms);
                (c.id.to_string(), score)
            })
            .collect()
    }

    fn attempt(&self, ticket: Ticket) -> Attempt<'_> {
        Attempt {
            chooser: self,
            ticket: Some(ticket),
            started: Instant::now(),
            answered: false,
        }
    }

    fn ms(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.epoch).as_secs_f64() * 1000.0
    }

    fn lock(&self) -> MutexGuard<'_, Balancer> {
        // The policy's state is a cache of observations: after a panic in
        // another request it is still usable, at worst slightly off.
        crate::locks::lock(&self.balancer)
    }
}

/// The table's servers as the policy sees them, and their URLs (same order).
fn candidates(table: &LoadTable, now: Instant) -> (Vec<Candidate<'_>>, Vec<&str>) {
    table
        .servers()
        .map(|(id, s)| {
            let candidate = Candidate {
                id: id.as_str(),
                alive: s.alive,
                cpu: s.cpu,
                wait: s.wait,
                report_age_ms: table.age_ms(id, now) as f64,
            };
            (candidate, s.url.as_str())
        })
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Report;
    use crate::table::Command;

    fn table_of(waits: &[(&str, f64)]) -> LoadTable {
        let reports = waits
            .iter()
            .map(|(id, wait)| Report {
                server: id.to_string(),
                url: format!("http://{id}:1"),
                cpu: 50.0,
                wait: *wait,
                seq: 1,
            })
            .collect();
        let mut table = LoadTable::new();
        table.apply(&Command::Reports(reports), Instant::now());
        table
    }

    #[test]
    fn a_burst_spreads_and_the_attempts_give_their_place_back() {
        let table = table_of(&[("a", 0.0), ("b", 0.0), ("c", 0.0)]);
        let chooser = Chooser::new(7);
        let now = Instant::now();
        let mut firsts = Vec::new();
        let mut held = Vec::new();
        for _ in 0..3 {
            let (order, attempt) = chooser.choose(&table, 5.0, now).expect("live servers");
            assert_eq!(order.len(), 3);
            firsts.push(order[0].0.clone());
            held.push(attempt);
        }
        firsts.sort();
        assert_eq!(firsts, ["a", "b", "c"], "three at once go to three servers");
        drop(held);
        // With nothing in flight, equal servers score equal again.
        let scores = chooser.scores(&table, 5.0, now);
        assert_eq!(scores.len(), 3);
        assert!(scores.iter().all(|(_, s)| *s == scores[0].1), "{scores:?}");
    }

    #[test]
    fn a_failing_server_is_tried_last_and_a_higher_wait_after_an_equal_one() {
        let table = table_of(&[("a", 0.0), ("b", 80.0), ("c", 0.0)]);
        let chooser = Chooser::new(1);
        let mut retry = chooser.start("a", 5.0);
        drop(retry); // not answered: a failure
        retry = chooser.start("c", 5.0);
        // A service time above zero, so that c's measured speed is too.
        std::thread::sleep(std::time::Duration::from_millis(2));
        retry.answered();
        drop(retry);
        let (order, _first) = (chooser.choose(&table, 5.0, Instant::now())).expect("live servers");
        let ids: Vec<&str> = order.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["c", "b", "a"]);
        assert_eq!(order[0].1, "http://c:1");
    }

    #[test]
    fn no_live_server_no_choice() {
        let chooser = Chooser::new(1);
        assert!(chooser
            .choose(&LoadTable::new(), 1.0, Instant::now())
            .is_none());
    }
}
