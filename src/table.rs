//! The replicated state machine: the load table, plus the note (NoteRaft).
//!
//! Every node applies the same committed [`Command`]s in the same order, so every
//! node holds the same agreed table: for each server its worker URL, its last
//! reported `cpu` and `wait`, the `seq` of that report and whether it is alive;
//! and the same note, the text a person last saved on the page.
//! Applying is deterministic; the only local value is when this node applied a
//! server's last report (`age_ms` in `/status`), which is not part of the agreed
//! state and not in snapshots.
//!
//! Choosing a server for a prime request (`server::choice`) reads this table
//! and what the node itself observed: no Raft round trip, no asking the
//! servers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::report::Report;
use crate::wire::{self, WireError};

/// Most servers the table holds: reports for further new servers are refused, so
/// a hostile reporter cannot grow every node's memory without bound.
pub(crate) const MAX_SERVERS: usize = 256;

/// Most reports coalesced into one log entry; with the largest valid report
/// this keeps an entry well inside one datagram.
pub(crate) const MAX_REPORTS_PER_ENTRY: usize = 48;

/// The largest note in bytes (SPEC: 32 KiB). With its command's framing it fits
/// one datagram with room to spare, so a note never needs more than one append.
pub(crate) const MAX_NOTE_BYTES: usize = 32 * 1024;

/// A state-machine command: the data of one log entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// The reports the leader coalesced during one tick, at most one per server.
    Reports(Vec<Report>),
    /// The leader saw no report from `server` for `--dead-after-ms`. `seq` is the
    /// last report the leader had applied then: a report applied in between makes
    /// this command a no-op, so a late "dead" never overrides a fresh report.
    MarkDead { server: String, seq: u64 },
    /// A person saved the note (`PUT /note`). `request` names the write so the
    /// node that took it can recognise it when applied (unique per node run: a
    /// random start plus a counter). New variants go last: the variant's
    /// position is its tag in the log and in snapshots.
    SetNote { text: String, request: u64 },
    /// Remove `server` from the table: proposed by the leader once a dead
    /// server has been silent for `--forget-after`, or on request
    /// (`runtime::forget`). The last `seq` goes with it, so the server's next
    /// report brings it back as new whatever its seq: a daemon's seq grows
    /// from its start time, so its real reports are newer anyway, but a
    /// replayed old report (signed with the cluster key, so once genuine) is
    /// accepted too. Keeping a tombstone per forgotten server would stop that
    /// at the cost of a table that never shrinks, which is what forgetting is
    /// for; the harm of a replay is bounded instead: the server shows alive
    /// with a stale load until `--dead-after-ms` marks it dead again, and a
    /// prime request that picks it moves on to the next server.
    Forget { server: String },
}

impl Command {
    pub fn encode(&self) -> Vec<u8> {
        wire::encode(self).expect("commands are plain data and always encode")
    }

    pub fn decode(bytes: &[u8]) -> Result<Command, WireError> {
        wire::decode(bytes)
    }
}

/// One server as the cluster agreed on it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Server {
    pub url: String,
    pub cpu: f64,
    pub wait: f64,
    pub seq: u64,
    pub alive: bool,
}

/// What applying a command changed that is worth a log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A new server, or a dead one that reported again.
    Alive(String),
    Dead(String),
    /// Removed from the table by a `Forget`.
    Forgotten(String),
}

/// The snapshot format; versioned so a later field can be added without
/// misreading an older data dir.
#[derive(Serialize, Deserialize)]
enum SnapshotData {
    /// Before the note existed: data dirs written then still restore.
    V1 { servers: BTreeMap<String, Server> },
    V2 {
        servers: BTreeMap<String, Server>,
        note: String,
    },
}

/// The agreed table and note, plus this node's local apply times.
#[derive(Debug, Default)]
pub struct LoadTable {
    servers: BTreeMap<String, Server>,
    /// The replicated note, as last set by a committed `SetNote`.
    note: String,
    /// When this node applied each server's last report (local, not agreed).
    applied_at: BTreeMap<String, Instant>,
}

impl LoadTable {
    pub fn new() -> LoadTable {
        LoadTable::default()
    }

    /// Applies one committed command; returns the liveness changes.
    pub fn apply(&mut self, command: &Command, now: Instant) -> Vec<Change> {
        match command {
            Command::Reports(reports) => reports
                .iter()
                .filter_map(|r| self.apply_report(r, now))
                .collect(),
            Command::MarkDead { server, seq } => match self.servers.get_mut(server) {
                Some(s) if s.alive && s.seq == *seq => {
                    s.alive = false;
                    vec![Change::Dead(server.clone())]
                }
                _ => Vec::new(),
            },
            Command::SetNote { text, .. } => {
                // Refused at the HTTP door; a longer one can only come from a
                // buggy or hostile leader, and every node skips it alike.
                if text.len() <= MAX_NOTE_BYTES {
                    self.note.clone_from(text);
                }
                Vec::new()
            }
            Command::Forget { server } => {
                self.applied_at.remove(server);
                match self.servers.remove(server) {
                    Some(_) => vec![Change::Forgotten(server.clone())],
                    None => Vec::new(),
                }
            }
        }
    }

    /// The note as applied on this node (linearizable only through ReadIndex:
    /// see `runtime::notes`).
    pub fn note(&self) -> &str {
        &self.note
    }

    fn apply_report(&mut self, report: &Report, now: Instant) -> Option<Change> {
        if report.validate().is_err() {
            // Only a buggy or hostile leader could commit one; every node skips it
            // the same way, so the tables stay equal.
            return None;
        }
        if !self.servers.contains_key(&report.server) && self.servers.len() >= MAX_SERVERS {
            return None;
        }
        let fresh = Server {
            url: report.url.clone(),
            cpu: report.cpu,
            wait: report.wait,
            seq: report.seq,
            alive: true,
        };
        let was_alive = match self.servers.get_mut(&report.server) {
            Some(s) if report.seq <= s.seq => return None,
            Some(s) => std::mem::replace(s, fresh).alive,
            None => {
                self.servers.insert(report.server.clone(), fresh);
                false
            }
        };
        self.applied_at.insert(report.server.clone(), now);
        (!was_alive).then(|| Change::Alive(report.server.clone()))
    }

    /// Whether a report would change the table (its seq is newer and, for a new
    /// server, there is room). The leader checks this before proposing.
    pub fn accepts(&self, report: &Report) -> bool {
        match self.servers.get(&report.server) {
            Some(s) => report.seq > s.seq,
            None => self.servers.len() < MAX_SERVERS,
        }
    }

    /// The dead servers silent for at least `quiet` on this node's clock
    /// (since it applied their last report): the ones to forget.
    pub(crate) fn dead_for(
        &self,
        quiet: Duration,
        now: Instant,
    ) -> impl Iterator<Item = &String> + '_ {
        self.servers
            .iter()
            .filter(move |(id, s)| {
                !s.alive
                    && self
                        .applied_at
                        .get(*id)
                        .is_none_or(|t| now.saturating_duration_since(*t) >= quiet)
            })
            .map(|(id, _)| id)
    }

    pub fn get(&self, server: &str) -> Option<&Server> {
        self.servers.get(server)
    }

    pub fn servers(&self) -> impl Iterator<Item = (&String, &Server)> {
        self.servers.iter()
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Milliseconds since this node applied the server's last report.
    pub fn age_ms(&self, server: &str, now: Instant) -> u64 {
        self.applied_at
            .get(server)
            .map(|t| now.saturating_duration_since(*t).as_millis() as u64)
            .unwrap_or(0)
    }

    /// The agreed state, for the core's compaction.
    pub fn snapshot(&self) -> Vec<u8> {
        wire::encode(&SnapshotData::V2 {
            servers: self.servers.clone(),
            note: self.note.clone(),
        })
        .expect("the table is plain data and always encodes")
    }

    /// Whether `bytes` is a snapshot [`LoadTable::restore`] accepts: the Raft
    /// core's check (`Config::snapshot_check`) before it installs a snapshot
    /// received from the leader, so one that does not decode is never written
    /// to the data dir.
    pub fn decodes(bytes: &[u8]) -> bool {
        wire::decode::<SnapshotData>(bytes).is_ok()
    }

    /// Replaces the table with a snapshot's. Report ages restart at `now`: the
    /// snapshot does not carry this node's local apply times.
    pub fn restore(bytes: &[u8], now: Instant) -> Result<LoadTable, WireError> {
        let (servers, note) = match wire::decode(bytes)? {
            SnapshotData::V1 { servers } => (servers, String::new()),
            SnapshotData::V2 { servers, note } => (servers, note),
        };
        let applied_at = servers.keys().map(|id| (id.clone(), now)).collect();
        Ok(LoadTable {
            servers,
            note,
            applied_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(server: &str, cpu: f64, seq: u64) -> Report {
        Report {
            server: server.into(),
            url: format!("http://w{server}.test:1"),
            cpu,
            wait: 0.0,
            seq,
        }
    }

    fn table_with(reports: &[Report]) -> LoadTable {
        let mut t = LoadTable::new();
        t.apply(&Command::Reports(reports.to_vec()), Instant::now());
        t
    }

    #[test]
    fn report_with_old_seq_is_ignored() {
        let mut t = table_with(&[report("1", 50.0, 10)]);
        let changes = t.apply(
            &Command::Reports(vec![report("1", 5.0, 10)]),
            Instant::now(),
        );
        assert!(changes.is_empty());
        assert_eq!(t.get("1").expect("known").cpu, 50.0);
        t.apply(&Command::Reports(vec![report("1", 5.0, 9)]), Instant::now());
        assert_eq!(t.get("1").expect("known").cpu, 50.0);
        t.apply(
            &Command::Reports(vec![report("1", 5.0, 11)]),
            Instant::now(),
        );
        assert_eq!(t.get("1").expect("known").cpu, 5.0);
        assert!(!t.accepts(&report("1", 1.0, 11)));
        assert!(t.accepts(&report("1", 1.0, 12)));
    }

    #[test]
    fn a_dead_server_comes_back_with_its_next_report_only() {
        let mut t = table_with(&[report("1", 5.0, 10)]);
        let dead = Command::MarkDead {
            server: "1".into(),
            seq: 10,
        };
        assert_eq!(
            t.apply(&dead, Instant::now()),
            vec![Change::Dead("1".into())]
        );
        assert!(!t.get("1").expect("known").alive);
        assert_eq!(t.apply(&dead, Instant::now()), vec![]);
        let back = Command::Reports(vec![report("1", 5.0, 11)]);
        assert_eq!(
            t.apply(&back, Instant::now()),
            vec![Change::Alive("1".into())]
        );
        assert!(t.get("1").expect("known").alive);
    }

    #[test]
    fn mark_dead_after_a_newer_report_is_a_no_op() {
        let mut t = table_with(&[report("1", 5.0, 10)]);
        t.apply(
            &Command::Reports(vec![report("1", 5.0, 11)]),
            Instant::now(),
        );
        let late = Command::MarkDead {
            server: "1".into(),
            seq: 10,
        };
        assert!(t.apply(&late, Instant::now()).is_empty());
        assert!(t.get("1").expect("known").alive);
    }

    #[test]
    fn the_table_is_bounded_in_servers() {
        let reports: Vec<Report> = (0..MAX_SERVERS + 10)
            .map(|i| report(&i.to_string(), 1.0, 1))
            .collect();
        let mut t = LoadTable::new();
        for chunk in reports.chunks(MAX_REPORTS_PER_ENTRY) {
            t.apply(&Command::Reports(chunk.to_vec()), Instant::now());
        }
        assert_eq!(t.len(), MAX_SERVERS);
        assert!(!t.accepts(&report("new", 1.0, 1)));
    }

    #[test]
    fn a_snapshot_restores_the_same_agreed_table() {
        let mut t = table_with(&[report("a", 30.0, 1), report("b", 10.0, 7)]);
        t.apply(
            &Command::MarkDead {
                server: "a".into(),
                seq: 1,
            },
            Instant::now(),
        );
        t.apply(
            &Command::SetNote {
                text: "héllo".into(),
                request: 1,
            },
            Instant::now(),
        );
        let back = LoadTable::restore(&t.snapshot(), Instant::now()).expect("valid snapshot");
        assert_eq!(back.servers, t.servers);
        assert_eq!(back.note(), "héllo");
        assert!(LoadTable::restore(b"\x07garbage", Instant::now()).is_err());
        assert!(LoadTable::decodes(&t.snapshot()));
        assert!(!LoadTable::decodes(b"\x07garbage"));
        assert!(!LoadTable::decodes(&[]));
    }

    #[test]
    fn a_snapshot_from_before_the_note_still_restores() {
        let servers = table_with(&[report("a", 30.0, 1)]).servers;
        let old = wire::encode(&SnapshotData::V1 {
            servers: servers.clone(),
        })
        .expect("encodes");
        let back = LoadTable::restore(&old, Instant::now()).expect("a V1 snapshot restores");
        assert_eq!(back.servers, servers);
        assert_eq!(back.note(), "");
    }

    #[test]
    fn the_last_committed_note_wins_and_an_oversized_one_is_skipped() {
        let mut t = LoadTable::new();
        let set = |text: &str| Command::SetNote {
            text: text.into(),
            request: 7,
        };
        t.apply(&set("first"), Instant::now());
        t.apply(&set("second"), Instant::now());
        assert_eq!(t.note(), "second");
        t.apply(&set(&"x".repeat(MAX_NOTE_BYTES + 1)), Instant::now());
        assert_eq!(t.note(), "second");
        t.apply(&set(&"x".repeat(MAX_NOTE_BYTES)), Instant::now());
        assert_eq!(t.note().len(), MAX_NOTE_BYTES);
        t.apply(&set(""), Instant::now());
        assert_eq!(t.note(), "");
    }

    #[test]
    fn the_largest_note_fits_one_entry_with_room_to_spare() {
        // Every byte a multi-byte character: the length counts bytes, not chars.
        let text = "é".repeat(MAX_NOTE_BYTES / 2);
        assert_eq!(text.len(), MAX_NOTE_BYTES);
        let entry = Command::SetNote {
            text,
            request: u64::MAX,
        }
        .encode();
        let limit = crate::raft::Config::new(1, vec![1]).max_entry_data_bytes();
        assert!(
            entry.len() + 16 * 1024 <= limit,
            "{} vs {limit}",
            entry.len()
        );
    }

    #[test]
    fn a_full_entry_of_the_largest_reports_fits_one_datagram() {
        let big = |i: usize| Report {
            server: format!("{i:0>128}"),
            url: format!("http://{}", "h".repeat(crate::report::MAX_URL_BYTES - 7)),
            cpu: 100.0,
            wait: 100.0,
            seq: u64::MAX,
        };
        let entry = Command::Reports((0..MAX_REPORTS_PER_ENTRY).map(big).collect()).encode();
        let limit = crate::raft::Config::new(1, vec![1]).max_entry_data_bytes();
        assert!(entry.len() <= limit, "{} > {limit}", entry.len());
    }

    #[test]
    fn a_forgotten_server_is_gone_and_comes_back_as_new_with_any_seq() {
        let mut t = table_with(&[report("a", 30.0, 100), report("b", 10.0, 7)]);
        let forget = Command::Forget { server: "a".into() };
        assert_eq!(
            t.apply(&forget, Instant::now()),
            vec![Change::Forgotten("a".into())]
        );
        assert!(t.get("a").is_none());
        assert_eq!(t.len(), 1);
        // Forgetting twice, or a server never known, changes nothing.
        assert!(t.apply(&forget, Instant::now()).is_empty());
        // Its seq went with it: a lower one is a new server's first report.
        assert!(t.accepts(&report("a", 5.0, 1)));
        let back = t.apply(&Command::Reports(vec![report("a", 5.0, 1)]), Instant::now());
        assert_eq!(back, vec![Change::Alive("a".into())]);
        assert_eq!(t.get("a").expect("back").seq, 1);
    }

    #[test]
    fn forgetting_frees_room_in_a_full_table() {
        let mut t = LoadTable::new();
        let reports: Vec<Report> = (0..MAX_SERVERS)
            .map(|i| report(&i.to_string(), 1.0, 1))
            .collect();
        for chunk in reports.chunks(MAX_REPORTS_PER_ENTRY) {
            t.apply(&Command::Reports(chunk.to_vec()), Instant::now());
        }
        assert!(!t.accepts(&report("new", 1.0, 1)));
        t.apply(&Command::Forget { server: "0".into() }, Instant::now());
        assert!(t.accepts(&report("new", 1.0, 1)));
    }

    #[test]
    fn only_servers_dead_and_silent_long_enough_are_due_to_be_forgotten() {
        let t0 = Instant::now();
        let mut t = LoadTable::new();
        t.apply(
            &Command::Reports(vec![report("a", 1.0, 1), report("b", 1.0, 1)]),
            t0,
        );
        let dead = Command::MarkDead {
            server: "a".into(),
            seq: 1,
        };
        t.apply(&dead, t0);
        let quiet = Duration::from_secs(60);
        let due = |t: &LoadTable, at: Instant| t.dead_for(quiet, at).cloned().collect::<Vec<_>>();
        assert!(due(&t, t0 + Duration::from_secs(59)).is_empty());
        assert_eq!(due(&t, t0 + quiet), ["a"]); // b is silent as long, but alive
    }

    #[test]
    fn a_table_with_forget_entries_still_snapshots_and_restores() {
        let mut t = table_with(&[report("a", 30.0, 1), report("b", 10.0, 7)]);
        t.apply(&Command::Forget { server: "a".into() }, Instant::now());
        let back = LoadTable::restore(&t.snapshot(), Instant::now()).expect("valid snapshot");
        assert_eq!(back.servers, t.servers);
        // The older commands keep their tags: a log written before Forget
        // existed decodes as it did.
        let note = Command::SetNote {
            text: "x".into(),
            request: 1,
        };
        assert_eq!(note.encode()[0], 2);
        assert_eq!(Command::Forget { server: "a".into() }.encode()[0], 3);
    }
}
