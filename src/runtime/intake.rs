//! Load reports on their way into the log, and dead-server detection.
//!
//! Reports arrive from daemons (every node gets every report) and from followers
//! that forward what they got. They wait here, newest per server, until the next
//! tick: then the leader proposes them as one entry, and a follower forwards
//! them to the leader. The leader also watches for servers that went quiet and
//! proposes to mark them dead; a new leader first gives every server a full
//! `dead_after` of grace, since it cannot know how long ago it last heard.
//! A server dead and silent for `forget_after` (this node's time since it
//! applied the server's last report: every node applies, so a new leader knows
//! it too, and a leader change does not restart the wait) is removed from the
//! table by a proposed `Forget`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::report::Report;
use crate::table::{Command, LoadTable, MAX_REPORTS_PER_ENTRY, MAX_SERVERS};

pub(crate) struct ReportIntake {
    /// The newest report per server not yet proposed or forwarded.
    pending: BTreeMap<String, Report>,
    /// When this node last received a report newer than the applied one.
    last_heard: BTreeMap<String, Instant>,
    /// The highest seq this node already proposed (leader) or forwarded
    /// (follower) per server: the copies of a report that reach the leader from
    /// every follower are not proposed again. Cleared when leadership changes,
    /// since what was proposed may then be lost.
    sent: BTreeMap<String, u64>,
    /// MarkDead proposals in flight, so one is not proposed every tick.
    dead_proposed: BTreeMap<String, Instant>,
    /// Forget proposals in flight, likewise.
    forget_proposed: BTreeMap<String, Instant>,
    dead_after: Duration,
    forget_after: Duration,
}

impl ReportIntake {
    pub fn new(dead_after: Duration, forget_after: Duration) -> ReportIntake {
        ReportIntake {
            pending: BTreeMap::new(),
            last_heard: BTreeMap::new(),
            sent: BTreeMap::new(),
            dead_proposed: BTreeMap::new(),
            forget_proposed: BTreeMap::new(),
            dead_after,
            forget_after,
        }
    }

    /// Takes a (validated) report in. Reports the table would drop anyway are
    /// dropped here; the rest count as a sign of life.
    pub fn receive(&mut self, report: Report, table: &LoadTable, now: Instant) {
        let already_sent = self
            .sent
            .get(&report.server)
            .is_some_and(|s| *s >= report.seq);
        if !table.accepts(&report) || already_sent {
            return;
        }
        if let Some(queued) = self.pending.get(&report.server) {
            if queued.seq >= report.seq {
                return;
            }
        } else if self.pending.len() >= MAX_SERVERS {
            return;
        }
        if self.last_heard.len() < MAX_SERVERS || self.last_heard.contains_key(&report.server) {
            self.last_heard.insert(report.server.clone(), now);
        }
        self.pending.insert(report.server.clone(), report);
    }

    /// Up to one entry's worth of pending reports, dropping those the table
    /// has since overtaken.
    pub(crate) fn take_batch(&mut self, table: &LoadTable) -> Vec<Report> {
        self.pending.retain(|_, r| table.accepts(r));
        let keys: Vec<String> = self
            .pending
            .keys()
            .take(MAX_REPORTS_PER_ENTRY)
            .cloned()
            .collect();
        let batch: Vec<Report> = keys.iter().filter_map(|k| self.pending.remove(k)).collect();
        for r in &batch {
            if self.sent.len() < MAX_SERVERS || self.sent.contains_key(&r.server) {
                self.sent.insert(r.server.clone(), r.seq);
            }
        }
        batch
    }

    /// Leadership changed: what was proposed or forwarded may be lost, so the
    /// next copy of a report is worth sending again.
    pub(crate) fn on_leader_change(&mut self) {
        self.sent.clear();
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Every known server gets a full grace period from `now`: when this node
    /// just became leader (it cannot know how long ago it last heard), and when
    /// the node itself stood still (a paused process, a suspended machine), since
    /// silence it did not watch says nothing about the servers.
    pub(crate) fn give_grace(&mut self, table: &LoadTable, now: Instant) {
        self.dead_proposed.clear();
        for (id, _) in table.servers() {
            self.last_heard.insert(id.clone(), now);
        }
    }

    /// The MarkDead commands due now: live servers not heard from for
    /// `dead_after`, not already proposed within the last `dead_after`.
    pub(crate) fn due_dead(&mut self, table: &LoadTable, now: Instant) -> Vec<Command> {
        let mut due = Vec::new();
        for (id, server) in table.servers().filter(|(_, s)| s.alive) {
            let heard = *self.last_heard.entry(id.clone()).or_insert(now);
            let quiet = now.saturating_duration_since(heard) >= self.dead_after;
            let recently_proposed = self
                .dead_proposed
                .get(id)
                .is_some_and(|t| now.saturating_duration_since(*t) < self.dead_after);
            if quiet && !recently_proposed {
                self.dead_proposed.insert(id.clone(), now);
                due.push(Command::MarkDead {
                    server: id.clone(),
                    seq: server.seq,
                });
            }
        }
        self.dead_proposed
            .retain(|id, _| table.get(id).is_some_and(|s| s.alive));
        due
    }

    /// The Forget commands due now: dead servers silent for `forget_after`,
    /// not already proposed within the last `dead_after`. (A report applied
    /// between the proposal and its commit makes a server alive that is then
    /// forgotten; its next report, a second later, brings it back.)
    pub(crate) fn due_forget(&mut self, table: &LoadTable, now: Instant) -> Vec<Command> {
        let mut due = Vec::new();
        for id in table.dead_for(self.forget_after, now) {
            let recently_proposed = self
                .forget_proposed
                .get(id)
                .is_some_and(|t| now.saturating_duration_since(*t) < self.dead_after);
            if !recently_proposed {
                self.forget_proposed.insert(id.clone(), now);
                due.push(Command::Forget { server: id.clone() });
            }
        }
        self.forget_proposed.retain(|id, _| table.get(id).is_some());
        due
    }

    /// `server` was removed from the table: what this node remembers of it
    /// goes too, so that its next report is taken as a new server's first
    /// (whatever its seq) rather than a copy of one already sent. A report
    /// still pending stays: it came after.
    pub fn forgotten(&mut self, server: &str) {
        self.sent.remove(server);
        self.last_heard.remove(server);
        self.dead_proposed.remove(server);
        self.forget_proposed.remove(server);
    }

    /// A snapshot replaced the table: every server it does not hold was
    /// forgotten (its `Forget` may be inside the snapshot, never applied here).
    pub(crate) fn snapshot_installed(&mut self, table: &LoadTable) {
        let gone: Vec<String> = (self.sent.keys())
            .chain(self.last_heard.keys())
            .chain(self.dead_proposed.keys())
            .chain(self.forget_proposed.keys())
            .filter(|server| table.get(server).is_none())
            .cloned()
            .collect();
        for server in gone {
            self.forgotten(&server);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORGET: Duration = Duration::from_secs(24 * 3600);

    fn report(server: &str, seq: u64) -> Report {
        Report {
            server: server.into(),
            url: "http://127.0.0.1:1".into(),
            cpu: 1.0,
            wait: 0.0,
            seq,
        }
    }

    #[test]
    fn reports_coalesce_to_the_newest_per_server() {
        let table = LoadTable::new();
        let mut intake = ReportIntake::new(Duration::from_secs(3), FORGET);
        let now = Instant::now();
        for (s, seq) in [("a", 2), ("a", 5), ("a", 3), ("b", 1)] {
            intake.receive(report(s, seq), &table, now);
        }
        let batch = intake.take_batch(&table);
        let got: Vec<(&str, u64)> = batch.iter().map(|r| (r.server.as_str(), r.seq)).collect();
        assert_eq!(got, [("a", 5), ("b", 1)]);
        assert!(!intake.has_pending());
    }

    #[test]
    fn copies_of_a_sent_report_are_not_sent_again_until_leadership_changes() {
        let table = LoadTable::new();
        let mut intake = ReportIntake::new(Duration::from_secs(3), FORGET);
        let now = Instant::now();
        intake.receive(report("a", 5), &table, now);
        assert_eq!(intake.take_batch(&table).len(), 1);
        intake.receive(report("a", 5), &table, now);
        assert!(intake.take_batch(&table).is_empty());
        intake.receive(report("a", 6), &table, now);
        assert_eq!(intake.take_batch(&table).len(), 1);
        intake.on_leader_change();
        intake.receive(report("a", 6), &table, now);
        assert_eq!(intake.take_batch(&table).len(), 1);
    }

    #[test]
    fn a_quiet_server_is_marked_dead_once_after_the_grace_period() {
        let mut table = LoadTable::new();
        let t0 = Instant::now();
        table.apply(&Command::Reports(vec![report("a", 1)]), t0);
        let mut intake = ReportIntake::new(Duration::from_millis(100), FORGET);
        intake.give_grace(&table, t0);
        assert!(intake
            .due_dead(&table, t0 + Duration::from_millis(99))
            .is_empty());
        let due = intake.due_dead(&table, t0 + Duration::from_millis(100));
        assert_eq!(
            due,
            [Command::MarkDead {
                server: "a".into(),
                seq: 1
            }]
        );
        assert!(intake
            .due_dead(&table, t0 + Duration::from_millis(150))
            .is_empty());
        // Not applied (lost with a leader change, say): proposed again later.
        assert_eq!(
            intake
                .due_dead(&table, t0 + Duration::from_millis(200))
                .len(),
            1
        );
    }

    #[test]
    fn a_report_postpones_death() {
        let mut table = LoadTable::new();
        let t0 = Instant::now();
        table.apply(&Command::Reports(vec![report("a", 1)]), t0);
        let mut intake = ReportIntake::new(Duration::from_millis(100), FORGET);
        intake.give_grace(&table, t0);
        intake.receive(report("a", 2), &table, t0 + Duration::from_millis(80));
        assert!(intake
            .due_dead(&table, t0 + Duration::from_millis(150))
            .is_empty());
        // A duplicate of the applied report is not a sign of life.
        intake.receive(report("a", 1), &table, t0 + Duration::from_millis(170));
        assert_eq!(
            intake
                .due_dead(&table, t0 + Duration::from_millis(180))
                .len(),
            1
        );
    }

    /// A `Forget` inside an installed snapshot is never applied here: the
    /// intake drops what it held of the servers the new table lacks, as it
    /// would on applying the `Forget`, and keeps the others.
    #[test]
    fn a_snapshot_without_a_server_forgets_it_in_the_intake() {
        let now = Instant::now();
        let mut table = LoadTable::new();
        table.apply(&Command::Reports(vec![report("kept", 1)]), now);
        let mut intake = ReportIntake::new(Duration::from_secs(3), FORGET);
        for (server, seq) in [("kept", 2), ("gone", 5)] {
            intake.receive(report(server, seq), &table, now);
        }
        assert_eq!(intake.take_batch(&table).len(), 2);
        intake.receive(report("gone", 5), &table, now);
        assert!(intake.take_batch(&table).is_empty(), "seq 5 already sent");
        intake.snapshot_installed(&table);
        intake.receive(report("gone", 5), &table, now);
        assert_eq!(intake.take_batch(&table).len(), 1, "gone comes back as new");
        intake.receive(report("kept", 2), &table, now);
        assert!(
            intake.take_batch(&table).is_empty(),
            "kept's seq 2 still sent"
        );
    }

    #[test]
    fn a_server_dead_for_forget_after_is_forgotten_once_then_reports_as_new() {
        let mut table = LoadTable::new();
        let t0 = Instant::now();
        table.apply(&Command::Reports(vec![report("a", 7), report("b", 1)]), t0);
        let dead = Command::MarkDead {
            server: "a".into(),
            seq: 7,
        };
        table.apply(&dead, t0);
        let forget_after = Duration::from_secs(60);
        let mut intake = ReportIntake::new(Duration::from_millis(100), forget_after);
        intake.receive(report("a", 7), &table, t0); // not newer: no sign of life
        assert!(intake.due_forget(&table, t0 + forget_after / 2).is_empty());
        let due = intake.due_forget(&table, t0 + forget_after);
        assert_eq!(due, [Command::Forget { server: "a".into() }]);
        assert!(intake.due_forget(&table, t0 + forget_after).is_empty());
        // A leader change does not restart the wait: the time is the table's.
        intake.give_grace(&table, t0 + forget_after);
        let later = t0 + forget_after + Duration::from_millis(100);
        assert_eq!(intake.due_forget(&table, later).len(), 1);
        table.apply(&due[0], later);
        intake.forgotten("a");
        assert!(intake.due_forget(&table, later).is_empty());
        // Back as new, with a seq below the forgotten one.
        intake.receive(report("a", 3), &table, later);
        assert_eq!(intake.take_batch(&table), [report("a", 3)]);
    }
}
