//! The result: rows of raftlb against a reference, with the ratio and the goal,
//! and the commands and notes that let a reader check them; rendered as
//! markdown for BENCHMARKS.md and the terminal.

use std::fmt::Write;
use std::time::Duration;

/// One line of the table.
pub struct Row {
    pub section: &'static str,
    /// What was measured, with its conditions.
    pub what: String,
    /// raftlb's figure.
    pub ours: String,
    /// The reference's figure, naming the reference ("—" when there is none).
    pub reference: String,
    /// The ratio and which way it is taken, e.g. "0.61 (raftlb ÷ etcd)".
    pub ratio: String,
    /// The issue's goal for this row, if it has one, and whether it is met.
    pub goal: Option<(String, bool)>,
}

impl Row {
    pub fn new(section: &'static str, what: impl Into<String>, ours: impl Into<String>) -> Row {
        Row {
            section,
            what: what.into(),
            ours: ours.into(),
            reference: "—".into(),
            ratio: "—".into(),
            goal: None,
        }
    }

    pub fn against(mut self, reference: impl Into<String>) -> Row {
        self.reference = reference.into();
        self
    }

    /// `numerator / denominator`, labelled; "—" when either is not a number.
    pub fn ratio(mut self, numerator: f64, denominator: f64, label: &str) -> Row {
        if numerator.is_finite() && denominator.is_finite() && denominator > 0.0 {
            let r = numerator / denominator;
            let digits = if r >= 100.0 { 0 } else { 2 };
            self.ratio = format!("{r:.digits$} ({label})");
        }
        self
    }

    pub fn goal(mut self, goal: impl Into<String>, met: bool) -> Row {
        self.goal = Some((goal.into(), met));
        self
    }

    /// A row for a measurement that could not be made.
    pub fn error(section: &'static str, what: impl Into<String>, error: &str) -> Row {
        Row::new(section, what, format!("error: {error}"))
    }
}

/// Everything the run produced, in the order it was measured.
#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    /// (section, command line) of every load and reference run.
    pub commands: Vec<(&'static str, String)>,
    /// Setup facts a reader needs: who was the follower, which CPU was hogged.
    pub notes: Vec<String>,
    /// (title, text) of the reference configs written for the run.
    pub configs: Vec<(String, String)>,
}

impl Report {
    pub fn command(&mut self, section: &'static str, command: impl Into<String>) {
        self.commands.push((section, command.into()));
    }

    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        eprintln!("bench: {note}");
        self.notes.push(note);
    }

    pub fn row(&mut self, row: Row) {
        eprintln!(
            "bench: {} | {} | {} | {} | {}",
            row.section, row.what, row.ours, row.reference, row.ratio
        );
        self.rows.push(row);
    }

    /// The table in markdown, its rows in the issue's order of sections.
    pub fn table(&self) -> String {
        let mut rows: Vec<&Row> = self.rows.iter().collect();
        rows.sort_by_key(|r| SECTIONS.iter().position(|s| *s == r.section));
        let mut out = String::new();
        out += "| | measure | raftlb | reference | ratio | goal | met |\n";
        out += "|---|---|---|---|---|---|---|\n";
        for r in rows {
            let (goal, met) = match &r.goal {
                Some((g, true)) => (g.as_str(), "✓"),
                Some((g, false)) => (g.as_str(), "✗"),
                None => ("—", ""),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.section,
                cell(&r.what),
                cell(&r.ours),
                cell(&r.reference),
                cell(&r.ratio),
                cell(goal),
                met
            );
        }
        out
    }

    /// The commands, grouped by section, as markdown code blocks.
    pub fn commands_markdown(&self) -> String {
        let mut out = String::new();
        let mut section = "";
        for (s, command) in &self.commands {
            if *s != section {
                if !section.is_empty() {
                    out += "```\n\n";
                }
                let _ = writeln!(out, "{s}:\n```sh");
                section = s;
            }
            let _ = writeln!(out, "{command}");
        }
        if !section.is_empty() {
            out += "```\n";
        }
        out
    }
}

/// A table cell: pipes would end it early.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// The table's sections, in the issue's order (rows are measured in another).
const SECTIONS: [&str; 9] = [
    "failover",
    "membership",
    "replication",
    "key",
    "balancing",
    "machines",
    "slowloris",
    "worker",
    "footprint",
];

/// BENCHMARKS.md: when and where, the table, how to read it, what was run.
pub fn document(
    report: &Report,
    machine: &str,
    settings: &crate::Settings,
    elapsed: Duration,
) -> String {
    let mut out = String::from("# raftlb benchmarks\n\n");
    out += "Written by `make bench` (`benches/compare/`): every row below comes from one run on one machine.\n\n";
    out += machine;
    let _ = writeln!(
        out,
        "- run: {} s{}, loads of {} s after a warm-up, {} failover trials per system\n",
        elapsed.as_secs(),
        if settings.quick {
            " (BENCH_QUICK=1: a development run, not for quoting)"
        } else {
            ""
        },
        settings.load_secs,
        settings.trials
    );
    out += &report.table();
    out += HOW_TO_READ;
    if !report.notes.is_empty() {
        out += "\n## Notes from the run\n\n";
        for n in &report.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    out += "\n## Commands\n\nPorts and temp dirs are the ones of this run.\n\n";
    out += &report.commands_markdown();
    for (name, text) in &report.configs {
        let _ = writeln!(out, "\n{name}:\n```\n{}```", text);
    }
    out
}

const HOW_TO_READ: &str = "
## How to read it

- Every load is closed-loop unless its row says open loop: each client sends
  its next request when the last one is answered, so throughput and latency
  are two views of one run.
- The same load tool (`raftlb bench`) drives both sides of every ratio; ratios
  say which way they are taken. p50/p99 are over the measured window, after
  the warm-up.
- Everything (the systems, the references, the workers and the load tool) runs
  on the same machine on loopback: the load tool competes for the CPUs with
  what it measures, and on a 2-core machine that is a large share. Read the
  ratios, not the absolute figures.
- Failover: SIGKILL of the leader, every live member polled every 5 ms, the
  time until all of them name the same new leader. The client gap is the
  longest wait between two successes of a client loop, from the last success
  before the kill to the first after the new leader, for a client that times a
  call out after 1 s and sends it again. A put in flight when etcd's leader
  dies is lost with it and etcd answers it only at its own request timeout
  (seconds): then etcd's gap is the client's 1 s timeout. raftlb's follower
  sends a write again once it knows it was lost.
- Membership: a raftlb cluster and a 5-member etcd of their own (a
  replacement changes the members). Replace: SIGKILL of a follower and its
  data dir deleted. raftlb's new node (new name, new port) is started with a
  nodes file of the members and it, then `raftlb member replace OLD NEW
  HOST:PORT` is run: timed from the command's start until every live
  member's `/status` shows NEW a voter, OLD gone and no learner (the check
  that the change happened), and NEW has applied what the leader had
  committed. etcd: `etcdctl member remove`, `member add --learner`, the new
  member started with `--initial-cluster-state existing`, caught up,
  `member promote` (sent again until etcd finds the learner in sync): timed
  from the first command until the new member answers a linearizable read.
  Trials alternate, each at least 6 s after the same system's last change:
  etcd refuses `member add` (`unhealthy cluster`) until its members have
  been connected for 5 s, and without the pause its time was that wait. The
  clients go through a surviving member as in the failover rows; the gap
  runs from the kill to the end, and every failed call is counted. Rolling
  restart: every member in turn, the leader last, stopped with SIGTERM (both
  systems hand leadership over before a leader stops; the note says what the
  raftlb leader's log said), started again on its data dir and caught up
  before the next. raftlb's clients are the CLI's own failover (`raftlb note
  set`: the leader first, the next node only when one cannot be reached;
  `raftlb prime`: the next node on any failure; the CLI's default timeouts);
  etcd's put goes to the next member when one cannot be reached, and any
  answer but 200 is a failure, as for `raftlb note set`. The issue's goal is
  no failed write and no failed prime.
- Replication: both systems acknowledge a write only after a majority of the
  5 members fsynced it; writes go to the leader.
- Machines: each worker and its daemon run in a cpu cgroup of their own
  with a quota (0.4 CPU per 100 ms period), a server's machine as far as CPU
  goes; the daemons report their cgroup (`--cgroup`). The load is one seeded
  stream of N for every system (a tenth costing 10-50 ms of worker CPU, the
  rest at most 1 ms; the N measured at the start of the run; each client
  thread a generator of its own, so no N is sent twice and no worker answers
  from its cache), 32 closed-loop
  clients, then an open loop at 70 % of the closed loops' rate (the median of
  the goal rounds) for raftlb
  and the reference with the lowest p99 (100 connections, latency counted
  from when each request was due; a rate a system cannot keep up with shows
  as fewer req/s than asked). Shares are the requests each machine answered, warm-up
  included: raftlb's from the node's forward counters, HAProxy's from its
  stats page, nginx's from an access log of `$upstream_addr`. The notes
  show, for each scenario, a lone 50 ms request timed on each machine and
  the agreed table in the middle of raftlb's run: the check that the
  scenario changes what it claims, and where each system's time went: the
  cheap and the costly requests apart, and the requests in flight (req/s ×
  mean latency: in a closed loop the 32 clients, by Little's law, so the
  mean latency is the same for every system that keeps the machines busy,
  and answering cheap requests sooner leaves more of it to the costly ones).
  The goal rows compare medians of 5 rounds of raftlb and the reference,
  taking turns (a single 7 s load differs from the next by up to 2x here).
  Shift: raftlb alone, six closed loops of
  5 s back to back; the neighbour's loops are moved from machine 3's cgroup
  to machine 1's at 15 s, and the node's forward counters are read every
  250 ms. Five doors: the weak machine's closed loop with the client threads
  taking turns over the five nodes, beside the weak row's one node. Skipped,
  with a note, where the host cannot make cgroups (it needs
  root and the cpu controller).
- Key: the main cluster (cluster key on, the default) beside a second one
  started with `--insecure`, same options otherwise, both running while
  either is measured; failover trials and write loads take turns.
- Slowloris: 1,000 connections bound to 127.0.0.2 each send one more byte of
  an unfinished request head every second and are opened again when closed;
  the load tool connects from 127.0.0.1. A node admits at most 128 connections
  from one address (1,024 in all) and cuts a head not finished in 10 s; the
  rest are answered 503 at once. HAProxy runs with the balancing config.
- Worker: one thread on every side; primesieve and primecount timed by their
  own `--time`, so their process start is not counted.
";
