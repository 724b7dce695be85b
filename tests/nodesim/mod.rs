//! A deterministic simulator of whole raftlb nodes: five `NodeLogic<MemDir>`
//! values, the product's own node logic (the Raft core, the storage on a
//! simulated disk that loses what was not fsynced, the load table, report
//! intake and dead-marking, note writes and reads, forget requests,
//! compaction), run through the same calls the runtime's event loop makes,
//! with virtual time: no copy of the loop.
//!
//! Around them: a network that drops, duplicates, delays and partitions
//! datagrams; daemons that report three servers every 100 ms to every node
//! and fall silent at times; note clients writing unique values and reading
//! through random nodes with the runtime's own request types; power cuts of
//! one node or of all five at once. One seeded generator drives everything,
//! so a seed replays exactly.
//!
//! The oracle checks the node's promises:
//! - note reads and writes are linearizable (the project's checker,
//!   `raftlb::lincheck`), and no acknowledged write is lost after the faults
//!   heal (`lost_writes` on a final read);
//! - every node's table is the same at the same applied index;
//! - a server is marked dead only after the silence rule: the report whose
//!   seq the `MarkDead` names was sent at least `dead_after` earlier;
//! - reports are never applied out of order (a server's seq never goes back
//!   on a node while it runs);
//! - at most one leader per term, and a node that restarts remembers the
//!   term and the vote it sent before its power cut.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use raftlb::auth::Auth;
use raftlb::lincheck::{self, Op, OpKind, Verdict};
use raftlb::nodes::Nodes;
use raftlb::raft::{MessageBody, NodeId, Rng, Role};
use raftlb::report::Report;
use raftlb::runtime::logic::{Inbound, LoopInput, NodeLogic};
use raftlb::runtime::{NodeSettings, NoteOutcome};
use raftlb::storage::MemDir;
use raftlb::wire::Datagram;

/// One step of virtual time: the runtime's tick.
pub const STEP_MS: u64 = 10;
pub const NODES: usize = 5;
const SERVERS: usize = 3;
const CLIENTS: usize = 4;
const DEAD_AFTER_MS: u64 = 1000;
const REPORT_EVERY_MS: u64 = 100;
/// How long a note request may wait in a node (the HTTP side's deadline).
const NOTE_DEADLINE: Duration = Duration::from_secs(3);

/// A datagram on the simulated wire.
struct InFlight {
    deliver_at: u64,
    order: u64,
    from: NodeId,
    to: NodeId,
    datagram: Datagram,
}

/// A note request a client is waiting on.
struct Pending {
    client: usize,
    invoked_ns: u64,
    kind: PendingKind,
    answer: Receiver<NoteOutcome>,
}

enum PendingKind {
    Write(String),
    Read,
}

/// What the faults may do in a run, drawn from the seed.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    /// Per datagram, out of 100.
    pub loss: u64,
    pub duplicate: u64,
    /// Extra delay in steps, at most.
    pub max_delay: u64,
    /// Per step, out of 10,000: a node's power cut.
    pub crash: u64,
    /// Per step, out of 10,000: every node's power cut at once.
    pub crash_all: u64,
    /// Per step, out of 10,000: a partition starts (or heals).
    pub partition: u64,
    /// Per step, out of 10,000: a daemon falls silent (or resumes).
    pub silence: u64,
}

impl Faults {
    pub fn draw(rng: &mut Rng) -> Faults {
        Faults {
            loss: rng.range(0, 15),
            duplicate: rng.range(0, 5),
            max_delay: rng.range(1, 6),
            crash: rng.range(0, 40),
            crash_all: rng.range(0, 4),
            partition: rng.range(0, 40),
            silence: rng.range(0, 60),
        }
    }

    fn none() -> Faults {
        Faults {
            loss: 0,
            duplicate: 0,
            max_delay: 1,
            crash: 0,
            crash_all: 0,
            partition: 0,
            silence: 0,
        }
    }
}

/// What a run did, so that a green run shows it tested something.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub delivered: u64,
    pub dropped: u64,
    pub crashes: u64,
    pub writes_acked: u64,
    pub writes_unknown: u64,
    pub reads: u64,
    pub marked_dead: u64,
    pub snapshots: u64,
    pub elections: u64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.delivered += o.delivered;
        self.dropped += o.dropped;
        self.crashes += o.crashes;
        self.writes_acked += o.writes_acked;
        self.writes_unknown += o.writes_unknown;
        self.reads += o.reads;
        self.marked_dead += o.marked_dead;
        self.snapshots += o.snapshots;
        self.elections += o.elections;
    }
}

/// Five simulated nodes, their network, daemons and clients, and the oracle.
pub struct NodeSim {
    pub seed: u64,
    rng: Rng,
    pub faults: Faults,
    /// Steps since the start.
    pub step: u64,
    base: Instant,
    settings: Vec<NodeSettings>,
    disks: Vec<MemDir>,
    nodes: Vec<Option<NodeLogic<MemDir>>>,
    /// Steps until a crashed node is started again.
    down_until: Vec<u64>,
    incarnations: Vec<u64>,
    network: Vec<InFlight>,
    next_order: u64,
    /// Node pairs that cannot talk, both ways.
    cut: Vec<(NodeId, NodeId)>,
    /// Per server: the next seq, and whether its daemon is silent.
    daemons: Vec<(u64, bool)>,
    /// When each (server, seq) was sent, in ms.
    sent_at: HashMap<(String, u64), u64>,
    pending: Vec<Option<Pending>>,
    pub history: Vec<Op>,
    next_value: u64,
    /// Applied index -> hash of the table there.
    tables: HashMap<u64, u64>,
    /// Per node: the highest seq seen per server in this incarnation.
    seqs: Vec<BTreeMap<String, u64>>,
    /// Per node: the servers seen dead in this incarnation.
    seen_dead: Vec<Vec<String>>,
    /// Term -> its leader.
    leaders: HashMap<u64, NodeId>,
    /// Per node: what it promised in datagrams it sent, which a power cut must
    /// not take back: the highest term, and the vote it granted (term,
    /// candidate).
    promises: Vec<(u64, Option<(u64, NodeId)>)>,
    /// Clients start requests only while this holds (not after the heal).
    clients_on: bool,
    pub stats: Stats,
}

/// The simulator numbers nodes 1..=NODES (cuts, leaders, promises); the
/// nodes themselves know each other by ids derived from their names.
fn real_id(sim_id: NodeId) -> NodeId {
    raftlb::nodes::node_id(&((b'A' + (sim_id - 1) as u8) as char).to_string())
}

/// The simulator's number of a node's real id (None: no such node).
fn sim_id(real: NodeId) -> Option<NodeId> {
    (1..=NODES as NodeId).find(|&s| real_id(s) == real)
}

fn node_settings(i: usize, snapshot_entries: u64) -> NodeSettings {
    let text: String = (0..NODES)
        .map(|k| format!("{} 127.0.0.1:{}\n", (b'A' + k as u8) as char, 40_001 + k))
        .collect();
    NodeSettings {
        id: ((b'A' + i as u8) as char).to_string(),
        nodes: Nodes::parse(&text, "sim").expect("valid nodes"),
        data_dir: PathBuf::from("simulated"),
        dead_after: Duration::from_millis(DEAD_AFTER_MS),
        forget_after: Duration::from_secs(24 * 3600),
        heartbeat: Duration::from_millis(50),
        election_min: Duration::from_millis(150),
        election_max: Duration::from_millis(300),
        max_n: 100,
        snapshot_entries,
        auth: Auth::Insecure,
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

impl NodeSim {
    pub fn new(seed: u64) -> NodeSim {
        let mut rng = Rng::new(seed);
        let faults = Faults::draw(&mut rng);
        let snapshot_entries = rng.range(20, 120);
        let mut sim = NodeSim {
            seed,
            faults,
            rng,
            step: 0,
            base: Instant::now(),
            settings: (0..NODES)
                .map(|i| node_settings(i, snapshot_entries))
                .collect(),
            disks: (0..NODES).map(|_| MemDir::new()).collect(),
            nodes: (0..NODES).map(|_| None).collect(),
            down_until: vec![0; NODES],
            incarnations: vec![0; NODES],
            network: Vec::new(),
            next_order: 0,
            cut: Vec::new(),
            daemons: (0..SERVERS)
                .map(|s| (1 + s as u64 * 1_000_000, false))
                .collect(),
            sent_at: HashMap::new(),
            pending: (0..CLIENTS).map(|_| None).collect(),
            history: Vec::new(),
            next_value: 1,
            tables: HashMap::new(),
            seqs: vec![BTreeMap::new(); NODES],
            seen_dead: vec![Vec::new(); NODES],
            leaders: HashMap::new(),
            promises: vec![(0, None); NODES],
            clients_on: true,
            stats: Stats::default(),
        };
        for i in 0..NODES {
            sim.start(i);
        }
        sim
    }

    fn now(&self) -> Instant {
        self.base + Duration::from_millis(self.step * STEP_MS)
    }

    fn now_ms(&self) -> u64 {
        self.step * STEP_MS
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "node sim seed {} step {}: {what}\n(replay: RAFTLB_NODESIM_SEED={})",
            self.seed, self.step, self.seed
        )
    }

    fn start(&mut self, i: usize) {
        self.incarnations[i] += 1;
        let seed = self.seed ^ ((i as u64 + 1) << 40) ^ self.incarnations[i].wrapping_mul(7919);
        // A wall clock in µs for the boot's epoch: virtual, and growing.
        let now_us = 1_700_000_000_000_000 + self.now_ms() * 1000;
        let logic = NodeLogic::open(
            &self.settings[i],
            self.disks[i].clone(),
            now_us,
            seed,
            self.now(),
        )
        .unwrap_or_else(|e| self.fail(&format!("node {i} cannot start: {e}")));
        let (term, vote) = self.promises[i];
        let raft = logic.raft();
        if raft.term() < term {
            self.fail(&format!(
                "node {i} restarted in term {} after sending in term {term}",
                raft.term()
            ));
        }
        if let Some((vote_term, candidate)) = vote {
            if raft.term() == vote_term && raft.vote() != Some(candidate) {
                self.fail(&format!(
                    "node {i} restarted in term {vote_term} having voted for {candidate}, \
                     remembering the vote {:?}",
                    raft.vote()
                ));
            }
        }
        self.nodes[i] = Some(logic);
        self.seqs[i].clear();
        self.seen_dead[i].clear();
    }

    /// A power cut: the process is gone (its waiting requests with it) and
    /// the disk keeps only what was fsynced, with a torn tail at random.
    fn crash(&mut self, i: usize) {
        if self.nodes[i].take().is_none() {
            return;
        }
        self.stats.crashes += 1;
        let torn = self.rng.next_u64();
        self.disks[i].crash(torn);
        self.down_until[i] = self.step + self.rng.range(5, 150);
    }

    fn linked(&self, a: NodeId, b: NodeId) -> bool {
        !self.cut.contains(&(a, b)) && !self.cut.contains(&(b, a))
    }

    /// One step: faults, deliveries, daemons, clients, one round per node,
    /// the outboxes onto the wire, answers, and the oracle.
    pub fn step(&mut self) {
        self.step += 1;
        self.inject_faults();
        self.deliver();
        self.report();
        self.invoke();
        let now = self.now();
        for i in 0..NODES {
            let Some(logic) = self.nodes[i].as_mut() else {
                continue;
            };
            logic.on_tick(now);
            if let Err(e) = logic.end_round(now) {
                self.fail(&format!("node {i} stopped: {e}"));
            }
        }
        self.send_outboxes();
        self.collect_answers();
        self.check();
    }

    fn inject_faults(&mut self) {
        let f = self.faults;
        for i in 0..NODES {
            if self.nodes[i].is_none() && self.step >= self.down_until[i] {
                self.start(i);
            }
        }
        if self.rng.range(0, 10_000) < f.crash {
            let i = self.rng.range(0, NODES as u64) as usize;
            self.crash(i);
        }
        if self.rng.range(0, 10_000) < f.crash_all {
            for i in 0..NODES {
                self.crash(i);
            }
            // All come back at once, as after a power cut of the room.
            let back = self.step + self.rng.range(5, 100);
            self.down_until = vec![back; NODES];
        }
        if self.rng.range(0, 10_000) < f.partition {
            if self.cut.is_empty() {
                // Cut one or two nodes off from the rest.
                let size = self.rng.range(1, 3);
                let mut side = Vec::new();
                while (side.len() as u64) < size {
                    let id = self.rng.range(1, NODES as u64 + 1);
                    if !side.contains(&id) {
                        side.push(id);
                    }
                }
                for &a in &side {
                    for b in 1..=NODES as u64 {
                        if !side.contains(&b) {
                            self.cut.push((a, b));
                        }
                    }
                }
            } else {
                self.cut.clear();
            }
        }
        if self.rng.range(0, 10_000) < f.silence {
            let s = self.rng.range(0, SERVERS as u64) as usize;
            self.daemons[s].1 = !self.daemons[s].1;
        }
    }

    fn deliver(&mut self) {
        let step = self.step;
        let mut due: Vec<InFlight> = Vec::new();
        let mut later = Vec::new();
        for d in self.network.drain(..) {
            if d.deliver_at <= step {
                due.push(d);
            } else {
                later.push(d);
            }
        }
        self.network = later;
        due.sort_by_key(|d| (d.deliver_at, d.order));
        let now = self.now();
        for d in due {
            let to = (d.to - 1) as usize;
            let linked = self.linked(d.from, d.to);
            match self.nodes[to].as_mut() {
                Some(logic) if linked => {
                    self.stats.delivered += 1;
                    logic.on_inbound(
                        now,
                        Inbound {
                            from: real_id(d.from),
                            datagram: d.datagram,
                        },
                    );
                }
                _ => self.stats.dropped += 1,
            }
        }
    }

    fn send_outboxes(&mut self) {
        let f = self.faults;
        for i in 0..NODES {
            let Some(logic) = self.nodes[i].as_mut() else {
                continue;
            };
            let from = i as NodeId + 1;
            for (to, datagram) in logic.take_outbox() {
                let Some(to) = sim_id(to) else {
                    self.stats.dropped += 1;
                    continue;
                };
                if let Datagram::Raft(m) = &datagram {
                    // A pre-vote carries a term its sender has not taken.
                    let vote = match m.body {
                        MessageBody::RequestVote { pre_vote: true, .. }
                        | MessageBody::RequestVoteResponse { pre_vote: true, .. } => None,
                        MessageBody::RequestVote { .. } => Some(Some((m.term, m.from))),
                        MessageBody::RequestVoteResponse { granted: true, .. } => {
                            Some(Some((m.term, m.to)))
                        }
                        _ => Some(None),
                    };
                    if let Some(vote) = vote {
                        let promise = &mut self.promises[i];
                        promise.0 = promise.0.max(m.term);
                        if vote.is_some() {
                            promise.1 = vote;
                        }
                    }
                }
                if self.rng.range(0, 100) < f.loss || !self.linked(from, to) {
                    self.stats.dropped += 1;
                    continue;
                }
                let copies = if self.rng.range(0, 100) < f.duplicate {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let delay = self.rng.range(1, f.max_delay + 1);
                    self.next_order += 1;
                    self.network.push(InFlight {
                        deliver_at: self.step + delay,
                        order: self.next_order,
                        from,
                        to,
                        datagram: datagram.clone(),
                    });
                }
            }
        }
    }

    /// Every daemon that is not silent reports to every live node, as the
    /// real daemon does.
    fn report(&mut self) {
        if !self.now_ms().is_multiple_of(REPORT_EVERY_MS) {
            return;
        }
        let now = self.now();
        for s in 0..SERVERS {
            let (seq, silent) = self.daemons[s];
            if silent {
                continue;
            }
            self.daemons[s].0 += 1;
            let server = format!("server-{}", s + 1);
            self.sent_at.insert((server.clone(), seq), self.now_ms());
            let report = Report {
                server,
                url: format!("http://127.0.0.1:{}", 13_337 + s),
                cpu: self.rng.range(0, 100) as f64,
                wait: self.rng.range(0, 20) as f64,
                seq,
            };
            for logic in self.nodes.iter_mut().flatten() {
                logic.on_input(now, LoopInput::Report(report.clone()));
            }
        }
    }

    fn invoke(&mut self) {
        let now = self.now();
        let invoked_ns = self.now_ms() * 1_000_000 + 1;
        for client in 0..CLIENTS {
            if !self.clients_on || self.pending[client].is_some() || self.rng.range(0, 100) >= 20 {
                continue;
            }
            let i = self.rng.range(0, NODES as u64) as usize;
            if self.nodes[i].is_none() {
                continue;
            }
            let (reply, answer) = crossbeam_channel::bounded(1);
            let deadline = now + NOTE_DEADLINE;
            let (kind, input) = if self.rng.chance(1, 2) {
                let value = format!("v{}", self.next_value);
                self.next_value += 1;
                let input = LoopInput::SetNote {
                    text: value.clone(),
                    reply,
                    deadline,
                };
                (PendingKind::Write(value), input)
            } else {
                (PendingKind::Read, LoopInput::ReadNote { reply, deadline })
            };
            if let Some(logic) = self.nodes[i].as_mut() {
                logic.on_input(now, input);
            }
            self.pending[client] = Some(Pending {
                client,
                invoked_ns,
                kind,
                answer,
            });
        }
    }

    fn collect_answers(&mut self) {
        let returned_ns = self.now_ms() * 1_000_000 + 5_000_000;
        for slot in 0..CLIENTS {
            let Some(p) = &self.pending[slot] else {
                continue;
            };
            let outcome = match p.answer.try_recv() {
                Ok(outcome) => Some(outcome),
                Err(crossbeam_channel::TryRecvError::Empty) => continue,
                // The node crashed with the request: no answer will come.
                Err(crossbeam_channel::TryRecvError::Disconnected) => None,
            };
            let p = self.pending[slot].take().expect("checked above");
            let op = match (p.kind, outcome) {
                (PendingKind::Write(v), Some(NoteOutcome::Saved { .. })) => {
                    self.stats.writes_acked += 1;
                    Some((OpKind::Write(v), Some(returned_ns)))
                }
                (PendingKind::Write(v), _) => {
                    self.stats.writes_unknown += 1;
                    Some((OpKind::Write(v), None))
                }
                (PendingKind::Read, Some(NoteOutcome::Read { text, .. })) => {
                    self.stats.reads += 1;
                    Some((OpKind::Read(text), Some(returned_ns)))
                }
                (PendingKind::Read, _) => None,
            };
            if let Some((kind, returned_ns)) = op {
                self.history.push(Op {
                    client: p.client,
                    kind,
                    invoked_ns: p.invoked_ns,
                    returned_ns,
                });
            }
        }
    }

    /// The oracle's checks after every step.
    fn check(&mut self) {
        let now_ms = self.now_ms();
        for i in 0..NODES {
            let Some(logic) = self.nodes[i].as_ref() else {
                continue;
            };
            let raft = logic.raft();
            if raft.role() == Role::Leader {
                let me = i as NodeId + 1;
                match self.leaders.insert(raft.term(), me) {
                    Some(other) if other != me => self.fail(&format!(
                        "two leaders in term {}: {other} and {me}",
                        raft.term()
                    )),
                    None => self.stats.elections += 1,
                    _ => {}
                }
            }
            let applied = raft.applied_index();
            let table = logic.shared().table();
            let hash = fnv(&table.snapshot());
            let mut violations = Vec::new();
            match self.tables.get(&applied) {
                Some(&h) if h != hash => violations.push(format!(
                    "node {i}'s table at applied index {applied} differs from another node's"
                )),
                Some(_) => {}
                None => {
                    self.tables.insert(applied, hash);
                }
            }
            for (server, entry) in table.servers() {
                let last = self.seqs[i].entry(server.clone()).or_insert(0);
                if entry.seq < *last {
                    violations.push(format!(
                        "node {i} applied {server}'s seq {} after {}",
                        entry.seq, *last
                    ));
                }
                *last = entry.seq;
                if !entry.alive && !self.seen_dead[i].contains(server) {
                    self.seen_dead[i].push(server.clone());
                    self.stats.marked_dead += 1;
                    let sent = self.sent_at.get(&(server.clone(), entry.seq)).copied();
                    match sent {
                        Some(sent) if now_ms >= sent + DEAD_AFTER_MS => {}
                        _ => violations.push(format!(
                            "node {i} shows {server} dead at seq {} sent at {sent:?} ms, \
                             now {now_ms} ms: less than {DEAD_AFTER_MS} ms of silence",
                            entry.seq
                        )),
                    }
                }
                if entry.alive {
                    self.seen_dead[i].retain(|s| s != server);
                }
            }
            drop(table);
            if let Some(v) = violations.first() {
                self.fail(v);
            }
            self.stats.snapshots = self.stats.snapshots.max(
                logic
                    .shared()
                    .counters
                    .snapshots_taken
                    .load(std::sync::atomic::Ordering::Relaxed),
            );
        }
    }

    /// Runs `steps` steps of faults, then heals everything and checks that a
    /// write is acknowledged, that the history is linearizable, and that a
    /// final read loses no acknowledged write.
    pub fn run(&mut self, steps: u64) {
        for _ in 0..steps {
            self.step();
        }
        self.faults = Faults::none();
        self.clients_on = false;
        self.cut.clear();
        for s in 0..SERVERS {
            self.daemons[s].1 = false;
        }
        // Let every request end (deadline 3 s) and every node come back.
        for _ in 0..(NOTE_DEADLINE.as_millis() as u64 / STEP_MS + 200) {
            self.step();
        }
        // A write still unanswered may have happened: it may come last.
        for p in self.pending.iter_mut().filter_map(Option::take) {
            if let PendingKind::Write(v) = p.kind {
                self.history.push(Op {
                    client: p.client,
                    kind: OpKind::Write(v),
                    invoked_ns: p.invoked_ns,
                    returned_ns: None,
                });
            }
        }
        let final_value = self.final_read();
        match lincheck::check_register("", &self.history) {
            Ok(Verdict::Linearizable { .. }) => {}
            Ok(Verdict::NotLinearizable { explanation }) => {
                self.fail(&format!("note history not linearizable: {explanation}"))
            }
            Err(e) => self.fail(&format!("the checker failed: {e}")),
        }
        let lost = lincheck::lost_writes(&self.history, &final_value);
        if !lost.is_empty() {
            let ops: Vec<&Op> = lost.iter().map(|&k| &self.history[k]).collect();
            self.fail(&format!(
                "acknowledged writes lost (final note {final_value:?}): {ops:?}"
            ));
        }
    }

    /// A read through every node in turn until one answers, after the heal.
    fn final_read(&mut self) -> String {
        for _ in 0..10 {
            let i = self.rng.range(0, NODES as u64) as usize;
            let (reply, answer) = crossbeam_channel::bounded(1);
            let deadline = self.now() + NOTE_DEADLINE;
            let now = self.now();
            if let Some(logic) = self.nodes[i].as_mut() {
                logic.on_input(now, LoopInput::ReadNote { reply, deadline });
            }
            for _ in 0..(NOTE_DEADLINE.as_millis() as u64 / STEP_MS + 10) {
                self.step();
                if let Ok(NoteOutcome::Read { text, .. }) = answer.try_recv() {
                    return text;
                }
            }
        }
        self.fail("no node answered a read after the heal")
    }
}
