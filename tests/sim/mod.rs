//! A deterministic simulator for the Raft core: real `Raft` values and the real
//! storage format on simulated disks (`MemDir`, which loses what was not fsynced
//! when a node crashes), joined by a simulated network that drops, duplicates,
//! reorders and delays messages and can be cut symmetrically or one way.
//!
//! Everything is driven by one seeded generator, so a run replays exactly from its
//! seed. An `Oracle` watches every step and panics on the first violation of Raft's
//! safety properties (Figure 3): election safety, log matching, leader
//! completeness, state machine safety; plus durability of votes and terms across
//! crashes, and linearizability of ReadIndex reads.

#![allow(dead_code)] // each test file uses a different part of the harness

pub mod chaos;
pub mod client;
pub mod network;
pub mod oracle;
pub mod statemachine;

use std::collections::{BTreeMap, BTreeSet};

use raftlb::raft::{
    Config, Entry, HardState, MembershipChange, Message, NodeId, Raft, Ready, Rng, Role,
};
use raftlb::storage::{MemDir, Storage};

pub use chaos::Faults;
use oracle::Oracle;
use statemachine::Counter;

/// Decides whether a message may travel (false drops it).
pub type MessageFilter = Box<dyn Fn(&Message) -> bool>;

/// One simulated server: its disk survives crashes, the rest does not.
pub struct SimNode {
    pub id: NodeId,
    pub disk: MemDir,
    pub raft: Option<Raft>,
    pub storage: Option<Storage<MemDir>>,
    pub sm: Counter,
    /// Reads this node served: ctx -> read index, waiting for apply.
    pending_reads: BTreeMap<u64, u64>,
    /// How many times this node was started, so each start draws a new seed.
    incarnation: u64,
    /// Its data dir's incarnation (`Config::incarnation`): new when the disk
    /// is wiped.
    pub data_incarnation: u64,
    /// Its data dir started empty (`Config::joining`), as every new node's
    /// and every wiped one's does in the runtime.
    pub joining: bool,
}

/// A message on the simulated wire.
struct InFlight {
    deliver_at: u64,
    order: u64,
    msg: Message,
}

/// A cluster of simulated nodes.
pub struct Cluster {
    pub seed: u64,
    pub rng: Rng,
    pub nodes: Vec<SimNode>,
    pub config_template: Config,
    pub faults: Faults,
    pub now: u64,
    network: Vec<InFlight>,
    next_order: u64,
    /// Links that drop everything: (from, to).
    pub cut: BTreeSet<(NodeId, NodeId)>,
    pub oracle: Oracle,
    /// Drops every message for which it returns false (targeted faults).
    pub filter: Option<MessageFilter>,
    /// Every message sent, when tracing is on.
    pub trace: Option<Vec<Message>>,
    /// Run the oracle's checks and the state machine's own (off in the benchmark,
    /// which measures the core, and for hostile input, which breaks Raft's
    /// assumptions: then the state machine only tracks the applied index).
    pub checks: bool,
    next_value: u64,
    next_read_ctx: u64,
    pub stats: Stats,
}

/// What a run exercised, so a green run can show it tested something.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub delivered: u64,
    pub dropped: u64,
    pub crashes: u64,
    pub snapshots_installed: u64,
    pub compactions: u64,
    pub read_failures: u64,
    /// Configuration changes proposed and accepted by a leader.
    pub changes_proposed: u64,
    /// Disks lost (`wipe`).
    pub wipes: u64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.delivered += o.delivered;
        self.dropped += o.dropped;
        self.crashes += o.crashes;
        self.snapshots_installed += o.snapshots_installed;
        self.compactions += o.compactions;
        self.read_failures += o.read_failures;
        self.changes_proposed += o.changes_proposed;
        self.wipes += o.wipes;
    }
}

impl Cluster {
    /// `size` nodes (ids 1..=size) with the simulator's small messages and chunks,
    /// so that batches and snapshots are cut many times.
    pub fn new(size: u64, seed: u64) -> Cluster {
        let voters: Vec<NodeId> = (1..=size).collect();
        let mut config = Config::new(1, voters.clone());
        config.max_message_bytes = 1024;
        config.snapshot_chunk_bytes = 200;
        config.max_inflight_appends = 8;
        config.snapshot_threshold_entries = 40;
        Cluster::with_config(config, seed)
    }

    /// A cluster whose nodes start from the given durable state (a hard state and
    /// a log each), written through the real storage before they start.
    pub fn with_logs(config: Config, seed: u64, states: Vec<(HardState, Vec<Entry>)>) -> Cluster {
        let disks: Vec<MemDir> = states
            .into_iter()
            .map(|(hs, entries)| {
                let disk = MemDir::new();
                let (mut storage, _) = Storage::open(disk.clone()).expect("a fresh memdir opens");
                storage.append(&entries).expect("memdir does not fail");
                storage.set_hard_state(hs).expect("memdir does not fail");
                storage.sync().expect("memdir does not fail");
                disk
            })
            .collect();
        Cluster::build(config, seed, disks)
    }

    pub fn with_config(config: Config, seed: u64) -> Cluster {
        Cluster::with_spares(config, 0, seed)
    }

    /// A cluster bootstrapped with `config`'s voters (ids 1..=n) and `spares`
    /// more nodes (ids n+1..) that are down and members of nothing until the
    /// membership chaos adds them. A spare starts as the runtime starts a new
    /// node: with a bootstrap configuration that lists it and the cluster's.
    pub fn with_spares(config: Config, spares: u64, seed: u64) -> Cluster {
        let count = config.bootstrap.voter_count() as u64 + spares;
        let disks = (0..count).map(|_| MemDir::new()).collect();
        let mut cluster = Cluster::build_down(config, seed, disks);
        for id in cluster.bootstrap_ids() {
            cluster.start(id);
        }
        cluster
    }

    fn build(config: Config, seed: u64, disks: Vec<MemDir>) -> Cluster {
        let mut cluster = Cluster::build_down(config, seed, disks);
        for id in cluster.ids() {
            cluster.start(id);
        }
        cluster
    }

    /// The bootstrap voters' ids.
    pub fn bootstrap_ids(&self) -> Vec<NodeId> {
        self.config_template.bootstrap.voters().collect()
    }

    fn build_down(mut config: Config, seed: u64, disks: Vec<MemDir>) -> Cluster {
        // As the runtime does with the load table: a snapshot its state machine
        // cannot read is refused before anything is written.
        config.snapshot_check = Counter::decodes;
        let bootstrap = config.bootstrap.clone();
        let nodes = (1..=disks.len() as NodeId)
            .zip(disks)
            .map(|(id, disk)| SimNode {
                id,
                disk,
                raft: None,
                storage: None,
                sm: Counter::default(),
                pending_reads: BTreeMap::new(),
                incarnation: 0,
                data_incarnation: id,
                joining: config.joining,
            })
            .collect();
        Cluster {
            seed,
            rng: Rng::new(seed),
            nodes,
            config_template: config,
            faults: Faults::default(),
            now: 0,
            network: Vec::new(),
            next_order: 0,
            cut: BTreeSet::new(),
            oracle: Oracle::with_bootstrap(bootstrap),
            filter: None,
            trace: None,
            checks: true,
            next_value: 1,
            next_read_ctx: 1,
            stats: Stats::default(),
        }
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub fn node(&self, id: NodeId) -> &SimNode {
        &self.nodes[(id - 1) as usize]
    }

    fn node_mut(&mut self, id: NodeId) -> &mut SimNode {
        &mut self.nodes[(id - 1) as usize]
    }

    pub fn raft(&self, id: NodeId) -> &Raft {
        self.node(id).raft.as_ref().expect("node is up")
    }

    pub fn raft_mut(&mut self, id: NodeId) -> &mut Raft {
        self.node_mut(id).raft.as_mut().expect("node is up")
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.node(id).raft.is_some()
    }

    pub fn up_ids(&self) -> Vec<NodeId> {
        self.ids()
            .into_iter()
            .filter(|&id| self.is_up(id))
            .collect()
    }

    /// Starts (or restarts) a node from what its disk kept.
    pub fn start(&mut self, id: NodeId) {
        let mut config = self.config_template.clone();
        config.id = id;
        config.incarnation = self.node(id).data_incarnation;
        config.joining = self.node(id).joining;
        if !config.bootstrap.contains(id) {
            config.bootstrap = config
                .bootstrap
                .apply(&MembershipChange::AddLearner {
                    id,
                    name: id.to_string(),
                    addr: id.to_string(),
                })
                .and_then(|m| m.apply(&MembershipChange::Promote(id)))
                .expect("a spare's id is new");
        }
        let node_seed = self.seed ^ (id << 32) ^ self.node(id).incarnation.wrapping_mul(7919);
        let node = self.node_mut(id);
        assert!(node.raft.is_none(), "node {id} is already up");
        node.incarnation += 1;
        let (storage, restored) = Storage::open(node.disk.clone())
            .unwrap_or_else(|e| panic!("node {id} cannot reopen its data dir: {e}"));
        node.sm = Counter::restore(restored.snapshot.as_ref());
        node.pending_reads.clear();
        let raft = Raft::new(config, restored.clone(), node_seed).expect("valid config");
        node.raft = Some(raft);
        node.storage = Some(storage);
        self.oracle.check_restart(id, &restored);
        self.process_ready(id);
    }

    /// Power loss: the process dies and the disk keeps only what was fsynced (with
    /// a torn prefix of the rest, at random).
    pub fn crash(&mut self, id: NodeId) {
        let torn_seed = self.rng.next_u64();
        self.stats.crashes += 1;
        let node = self.node_mut(id);
        node.raft = None;
        node.storage = None;
        node.disk.crash(torn_seed);
    }

    /// The disk is lost: the node dies and comes back (at the next `start`)
    /// with an empty data dir, as a new incarnation that remembers nothing it
    /// voted or acknowledged.
    pub fn wipe(&mut self, id: NodeId) {
        if self.is_up(id) {
            self.crash(id);
        }
        if std::env::var("RAFTLB_SIM_DEBUG").is_ok() {
            let view: Vec<String> = self
                .up_ids()
                .iter()
                .map(|&l| {
                    let r = self.raft(l);
                    format!(
                        "node {l} {:?} {:?} cfg@{} commit {} last {}",
                        r.role(),
                        r.membership()
                            .members()
                            .iter()
                            .map(|m| (m.id, m.voter, m.incarnation))
                            .collect::<Vec<_>>(),
                        r.membership_index(),
                        r.commit_index(),
                        r.log().last_index()
                    )
                })
                .collect();
            eprintln!("tick {}: wipe {id}; leader's view {view:?}", self.now);
        }
        let fresh = self.rng.next_u64() | 1 << 63;
        let node = self.node_mut(id);
        node.disk = MemDir::new();
        node.data_incarnation = fresh;
        node.joining = true;
        self.oracle.forget_promises(id);
        self.stats.wipes += 1;
    }

    /// One tick: every live node's clock, then the messages due now.
    pub fn tick(&mut self) {
        self.now += 1;
        for id in self.up_ids() {
            self.raft_mut(id).tick();
            self.process_ready(id);
        }
        self.deliver_due();
        self.after_step();
    }

    /// One tick in which only `ids` see time pass (the others' clocks stand still,
    /// so they never time out): how a test picks who campaigns.
    pub fn tick_only(&mut self, ids: &[NodeId]) {
        self.now += 1;
        for &id in ids {
            if self.is_up(id) {
                self.raft_mut(id).tick();
                self.process_ready(id);
            }
        }
        self.deliver_due();
        self.after_step();
    }

    pub fn run(&mut self, ticks: u64) {
        for _ in 0..ticks {
            self.tick();
        }
    }

    /// Ticks until `done` holds; None when it did not within `max_ticks`.
    pub fn run_until(&mut self, max_ticks: u64, done: impl FnMut(&Cluster) -> bool) -> Option<u64> {
        self.step_until(max_ticks, done, Cluster::tick)
    }

    /// Delivers messages with no node's clock moving (no timeouts, no
    /// heartbeats) until `done` holds; None when it did not within
    /// `max_ticks`.
    pub fn run_until_still(
        &mut self,
        max_ticks: u64,
        done: impl FnMut(&Cluster) -> bool,
    ) -> Option<u64> {
        self.step_until(max_ticks, done, |c| c.tick_only(&[]))
    }

    fn step_until(
        &mut self,
        max_ticks: u64,
        mut done: impl FnMut(&Cluster) -> bool,
        mut step: impl FnMut(&mut Cluster),
    ) -> Option<u64> {
        for spent in 0..max_ticks {
            if done(self) {
                return Some(spent);
            }
            step(self);
        }
        done(self).then_some(max_ticks)
    }

    /// The node every live node agrees leads (None while they disagree).
    pub fn leader(&self) -> Option<NodeId> {
        let leaders: Vec<NodeId> = self
            .up_ids()
            .into_iter()
            .filter(|&id| self.raft(id).role() == Role::Leader)
            .collect();
        let newest = leaders
            .iter()
            .max_by_key(|&&id| self.raft(id).term())
            .copied()?;
        let term = self.raft(newest).term();
        let agreed: Vec<NodeId> = self
            .up_ids()
            .into_iter()
            .filter(|&id| self.raft(id).term() == term && self.raft(id).leader() == Some(newest))
            .collect();
        self.raft(newest)
            .membership()
            .is_quorum(&agreed)
            .then_some(newest)
    }

    pub fn wait_for_leader(&mut self, max_ticks: u64) -> NodeId {
        self.run_until(max_ticks, |c| c.leader().is_some())
            .unwrap_or_else(|| panic!("seed {}: no leader within {max_ticks} ticks", self.seed));
        self.leader().expect("checked above")
    }

    /// Some node other than `id` (the lowest id), for tests that need "a follower".
    pub fn other_than(&self, id: NodeId) -> NodeId {
        self.ids()
            .into_iter()
            .find(|&other| other != id)
            .expect("a cluster of one has no other node")
    }

    /// The live nodes `from` can exchange messages with (itself included).
    pub fn reachable_from(&self, from: NodeId) -> Vec<NodeId> {
        let linked =
            |id: NodeId| !self.cut.contains(&(from, id)) && !self.cut.contains(&(id, from));
        self.up_ids().into_iter().filter(|&id| linked(id)).collect()
    }

    /// Every node's state in a few lines, for failure messages.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let Some(r) = &node.raft else {
                out.push_str(&format!("node {}: down\n", node.id));
                continue;
            };
            let log = r.log();
            out.push_str(&format!(
                "node {}: {:?} term {} leader {:?} commit {} applied {} log {}..={} sm {} config {} (index {})\n",
                node.id,
                r.role(),
                r.term(),
                r.leader(),
                r.commit_index(),
                r.applied_index(),
                log.first_index(),
                log.last_index(),
                node.sm.applied_index,
                r.membership(),
                r.membership_index()
            ));
            for id in self.ids() {
                if let Some(p) = r.progress_of(id) {
                    out.push_str(&format!(
                        "    {id}: {:?} match {} next {}\n",
                        p.state, p.match_index, p.next_index
                    ));
                }
            }
        }
        out.push_str(&format!("cut: {:?}\n", self.cut));
        out
    }

    /// The runtime's loop body: persist, fsync, send, apply, serve reads, advance,
    /// and compact when the core asks for a snapshot.
    pub fn process_ready(&mut self, id: NodeId) {
        for _ in 0..100 {
            let raft = self.node_mut(id).raft.as_mut().expect("node is up");
            if !raft.has_ready() {
                break;
            }
            let rd = raft.ready();
            self.handle_ready(id, rd);
        }
    }

    fn handle_ready(&mut self, id: NodeId, rd: Ready) {
        let raft = self.nodes[(id - 1) as usize]
            .raft
            .as_ref()
            .expect("node is up");
        if self.checks {
            self.oracle.check_entries(id, raft, &rd.entries);
        }
        let node = self.node_mut(id);
        let storage = node.storage.as_mut().expect("node is up");
        if let Some(snapshot) = &rd.snapshot {
            storage
                .apply_snapshot(snapshot)
                .expect("memdir does not fail");
        }
        if !rd.entries.is_empty() {
            storage.append(&rd.entries).expect("memdir does not fail");
        }
        if let Some(hs) = rd.hard_state {
            storage.set_hard_state(hs).expect("memdir does not fail");
        }
        if rd.must_persist() {
            storage.sync().expect("memdir does not fail");
        }
        for msg in rd.messages {
            if self.checks {
                self.oracle.sent(&msg);
            }
            self.send_to_network(msg);
        }
        let checks = self.checks;
        if let Some(snapshot) = &rd.snapshot {
            self.stats.snapshots_installed += 1;
            let node = self.node_mut(id);
            if checks {
                node.sm = Counter::restore(Some(snapshot));
                self.oracle.check_snapshot(id, snapshot);
            } else {
                node.sm = Counter::skip_to(snapshot.meta.index);
            }
        }
        for entry in rd.committed_entries {
            if checks {
                self.oracle.applied(id, &entry);
                self.node_mut(id).sm.apply(&entry);
            } else {
                self.node_mut(id).sm.applied_index = entry.index;
            }
        }
        self.stats.read_failures += rd.read_failures.len() as u64;
        for read in rd.read_states {
            self.node_mut(id).pending_reads.insert(read.ctx, read.index);
        }
        self.serve_reads(id);
        let node = &mut self.nodes[(id - 1) as usize];
        let raft = node.raft.as_mut().expect("node is up");
        raft.advance();
        if raft.wants_snapshot() {
            let applied = raft.applied_index();
            let data = node.sm.snapshot(applied);
            if let Some(snapshot) = raft.compact(applied, data) {
                self.stats.compactions += 1;
                let storage = node.storage.as_mut().expect("node is up");
                storage
                    .apply_snapshot(&snapshot)
                    .expect("memdir does not fail");
            }
        }
    }

    fn after_step(&mut self) {
        if !self.checks {
            return;
        }
        let seed = self.seed;
        for node in &self.nodes {
            if let Some(raft) = &node.raft {
                self.oracle.check_node(node.id, raft, seed);
            }
        }
    }
}

/// `RAFTLB_SIM_SEED=n` replays one seed; otherwise `RAFTLB_SIM_SEEDS=n` (default
/// `default_count`) seeds from a base drawn from the clock (printed, and
/// fixed with `RAFTLB_SIM_BASE=n`).
pub fn seeds(default_count: u64) -> Vec<u64> {
    if let Some(seed) = env_u64("RAFTLB_SIM_SEED") {
        return vec![seed];
    }
    let count = env_u64("RAFTLB_SIM_SEEDS").unwrap_or(default_count);
    let base = env_u64("RAFTLB_SIM_BASE").unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos % 1_000_000_000
    });
    eprintln!("simulating {count} seeds from base {base} (RAFTLB_SIM_BASE={base} repeats them)");
    (0..count).map(|i| base + i).collect()
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, not {value:?}")),
    )
}
