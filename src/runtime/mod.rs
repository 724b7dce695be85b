//! The runtime of a balancer node: the threads around the pure Raft core.
//!
//! - one UDP thread (`udp.rs`) decodes datagrams into a bounded channel;
//! - one event-loop thread (`event_loop.rs`) owns the core, the storage and
//!   the load table, and selects over that channel, the HTTP threads' requests
//!   and a 10 ms ticker;
//! - a thread per HTTP connection (`crate::server`) answers clients from the
//!   view the loop publishes (`shared.rs`), and hands reports and note requests
//!   to the loop through a bounded channel; a note request waits for the loop's
//!   answer (`notes/`), and so does a request to forget a server (`forget.rs`).
//!
//! [`start`] wires them and returns a [`RunningNode`], whose [`NodeHandle`] is
//! all its callers see: a few verbs, each bounded in time.
//! [`RunningNode::shutdown`] stops the threads in order (a leader first hands
//! leadership over).

mod epoch;
mod event_loop;
mod forget;
mod format;
mod handle;
mod incarnation;
mod intake;
mod members;
mod notes;
mod shared;
mod start_error;
mod thread_cache;
mod trim;
mod udp;

pub use forget::{
    parse_forget_after, BadDuration, ForgetOutcome, FORGET_AFTER_MAX, FORGET_AFTER_MIN,
};
pub use handle::{NodeHandle, NotTaken};
pub use members::{MemberOp, MemberOutcome};
pub use notes::{NoteOutcome, NOTE_TIMEOUT};
pub use shared::{LoopCounters, RaftView};
pub use start_error::{DataDirProblem, StartError};
pub use thread_cache::exec_without_tcache;

/// The node's deterministic logic, for whoever drives it without the
/// runtime's threads: the node simulator (`tests/nodesim`) feeds
/// `NodeLogic` the same inputs the threads do, at the
/// times it chooses, and carries out what it returns.
pub mod logic {
    pub use super::event_loop::{LoopInput, NodeLogic};
    pub use super::udp::Inbound;
}

use std::collections::HashMap;
use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;

use crate::auth::Auth;
use crate::nodes::Nodes;
use crate::raft::{Config, ConfigError, Member, Membership, Raft, Role};
use crate::storage::{Dir, FsDir, Storage};
use crate::table::LoadTable;
use event_loop::{EventLoop, LoopChannels, NodeLogic, RuntimeError, TICK};
use intake::ReportIntake;
use shared::{Shared, SharedSettings};

/// Datagrams waiting for the loop; beyond this they are dropped (and counted):
/// Raft retries, and an unbounded queue would only hide an overloaded node.
const INBOUND_QUEUE: usize = 4096;
/// Requests from the HTTP threads waiting for the loop (reports, note writes
/// and reads, forgets, all in one queue); a full queue answers 503.
const INPUT_QUEUE: usize = 1024;

/// Everything a node needs to start, from its flags.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    /// This node's id in nodes.txt.
    pub id: String,
    pub nodes: Nodes,
    pub data_dir: PathBuf,
    pub dead_after: Duration,
    /// A dead server silent this long is forgotten (`--forget-after`).
    pub forget_after: Duration,
    pub heartbeat: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
    pub max_n: u64,
    /// Applied entries between snapshots (see `Config::snapshot_threshold_entries`).
    pub snapshot_entries: u64,
    /// The cluster key, or `--insecure`.
    pub auth: Auth,
}

/// A started node: its threads and the handles to stop them.
pub struct RunningNode {
    /// This node's address from nodes.txt: UDP is bound there, HTTP goes there too.
    pub address: SocketAddr,
    handle: NodeHandle,
    stop_tx: Sender<()>,
    stop_udp: Arc<AtomicBool>,
    event_loop: JoinHandle<Result<(), RuntimeError>>,
    udp: JoinHandle<()>,
    /// Held for the process's life: another node on the same data dir is refused.
    _lock: File,
}

impl RunningNode {
    /// The handle callers use: the HTTP side gets a clone.
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Whether the event loop has ended (a storage failure ends it on its own).
    pub fn is_finished(&self) -> bool {
        self.event_loop.is_finished()
    }

    /// Stops the loop (a leader hands over first), then the UDP thread. Returns
    /// the loop's error if it had stopped on one.
    pub fn shutdown(self) -> Result<(), RuntimeError> {
        // The loop may already be gone (storage failure): then there is no receiver.
        let _ = self.stop_tx.send(());
        let result = self
            .event_loop
            .join()
            .unwrap_or_else(|_| panic!("the event loop panicked"));
        self.stop_udp.store(true, Ordering::Relaxed);
        if self.udp.join().is_err() {
            log::error!("the udp thread panicked");
        }
        result
    }
}

/// Opens the data dir, restores the core and the table, binds the UDP socket and
/// starts the UDP and event-loop threads. The caller starts HTTP with
/// [`RunningNode::handle`].
pub fn start(settings: &NodeSettings) -> Result<RunningNode, StartError> {
    let nodes = &settings.nodes;
    let me = nodes
        .require(&settings.id, "nodes.txt")
        .map_err(StartError::Nodes)?;
    let address = nodes.get(me).expect("require returned a listed id").socket;
    let lock = lock_data_dir(&settings.data_dir)?;
    let dir = FsDir::open(&settings.data_dir)
        .map_err(|e| StartError::data_dir(&settings.data_dir)(DataDirProblem::Storage(e)))?;
    let logic = NodeLogic::open(settings, dir, epoch::now_us(), seed(), Instant::now())?;
    log::info!(
        "node {} starting in term {} with commit index {} (data dir {})",
        settings.id,
        logic.raft().term(),
        logic.raft().commit_index(),
        settings.data_dir.display()
    );
    let shared = logic.shared().clone();
    let socket = UdpSocket::bind(address).map_err(|source| StartError::Bind {
        what: format!("cannot bind udp {address}"),
        source,
    })?;
    let recv_socket = socket.try_clone().map_err(|source| StartError::Bind {
        what: "udp socket".into(),
        source,
    })?;
    let (inbound_tx, inbound_rx) = crossbeam_channel::bounded(INBOUND_QUEUE);
    let (input_tx, input_rx) = crossbeam_channel::bounded(INPUT_QUEUE);
    let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
    let stop_udp = Arc::new(AtomicBool::new(false));
    let udp = udp::spawn_receiver(recv_socket, shared.clone(), inbound_tx, stop_udp.clone())
        .map_err(|source| StartError::Bind {
            what: "udp receiver".into(),
            source,
        })?;
    let event_loop = EventLoop { logic, socket };
    let channels = LoopChannels {
        inbound: inbound_rx,
        input: input_rx,
        stop: stop_rx,
    };
    let event_loop = std::thread::Builder::new()
        .name("event-loop".into())
        .spawn(move || event_loop.run(channels))
        .map_err(|source| StartError::Bind {
            what: "cannot start the event loop".into(),
            source,
        })?;
    Ok(RunningNode {
        address,
        handle: NodeHandle::new(shared, input_tx),
        stop_tx,
        stop_udp,
        event_loop,
        udp,
        _lock: lock,
    })
}

impl<D: Dir> NodeLogic<D> {
    /// A node on `dir`, as it starts: this boot's epoch recorded (from
    /// `now_us`, the wall clock) before anything can be sent, the storage
    /// opened and recovered, the core and the load table restored. The
    /// runtime and the simulator both start nodes here.
    pub fn open(
        settings: &NodeSettings,
        mut dir: D,
        now_us: u64,
        seed: u64,
        now: Instant,
    ) -> Result<NodeLogic<D>, StartError> {
        let nodes = &settings.nodes;
        let me = nodes
            .require(&settings.id, "nodes.txt")
            .map_err(StartError::Nodes)?;
        let data_dir = StartError::data_dir(&settings.data_dir);
        // Before anything else is read or written: a newer format is refused.
        let found = format::check_and_record(&mut dir).map_err(&data_dir)?;
        let epoch = epoch::next_epoch(&mut dir, now_us).map_err(&data_dir)?;
        let incarnation =
            incarnation::load_or_create(&mut dir, seed ^ now_us).map_err(&data_dir)?;
        let (mut storage, mut restored) =
            Storage::open(dir).map_err(|e| data_dir(DataDirProblem::Storage(e)))?;
        if found.is_none_or(|f| f < format::NAMED_IDS) {
            // The vote names a node by its position in nodes.txt (format 1):
            // name it by its derived id before anything can read it.
            let hs = &mut restored.hard_state;
            if let Some(name) = hs.vote.and_then(|p| nodes.legacy_name(p)) {
                hs.vote = Some(crate::nodes::node_id(name));
                storage
                    .set_hard_state(*hs)
                    .and_then(|()| storage.sync())
                    .map_err(|e| data_dir(DataDirProblem::Storage(e)))?;
                log::info!("data dir: the vote for {name} is now recorded by its derived id");
            }
            // (A vote no name maps still blocks other votes in its term.)
        }
        let table = match &restored.snapshot {
            Some(snapshot) => LoadTable::restore(&snapshot.data, now)
                .map_err(|e| data_dir(DataDirProblem::NotATable(e)))?,
            None => LoadTable::new(),
        };
        let mut config = raft_config(settings, me)?;
        config.incarnation = incarnation.value;
        config.joining = incarnation.joining;
        let raft =
            Raft::new(config, restored, seed).map_err(|e| data_dir(DataDirProblem::Restore(e)))?;
        if raft.is_joining() {
            log::info!(
                "data dir {}: began empty and the cluster has not bound it yet: this node votes \
                 in a new cluster's first moments or for a candidate that knows it (a node whose \
                 disk was lost: `raftlb member remove {}`, then `add`)",
                settings.data_dir.display(),
                settings.id
            );
        }
        let shared = Arc::new(Shared::new(
            SharedSettings {
                me,
                nodes: nodes.clone(),
                max_n: settings.max_n,
                auth: settings.auth.clone(),
                epoch,
            },
            table,
        ));
        Ok(NodeLogic {
            logged: (Role::Follower, raft.term(), None),
            replay_until: raft.commit_index(),
            raft,
            storage,
            shared,
            outbox: Vec::new(),
            intake: ReportIntake::new(settings.dead_after, settings.forget_after),
            notes: notes::NoteRequests::new(me, seed),
            forgets: forget::ForgetRequests::default(),
            last_tick: now,
            heard_from: HashMap::new(),
            told_members: HashMap::new(),
            known_membership: Membership::default(),
            member_job: None,
            reach_window: settings.election_max * 2,
            trim_due: false,
            last_trim: now,
        })
    }
}

/// The core's settings from the node's flags, in ticks of [`TICK`].
fn raft_config(settings: &NodeSettings, me: u64) -> Result<Config, StartError> {
    let ticks = |d: Duration| (d.as_millis() / TICK.as_millis()).max(1) as u64;
    let bootstrap = Membership::new(
        settings
            .nodes
            .with_ids()
            .map(|(id, e)| Member {
                id,
                name: e.id.clone(),
                addr: e.addr.clone(),
                voter: true,
                incarnation: 0,
            })
            .collect(),
    )
    .map_err(|e| StartError::Flags(ConfigError::Bootstrap(e)))?;
    let mut config = Config::with_bootstrap(me, bootstrap);
    config.heartbeat_ticks = ticks(settings.heartbeat);
    config.election_ticks_min = ticks(settings.election_min);
    config.election_ticks_max = ticks(settings.election_max);
    config.snapshot_threshold_entries = settings.snapshot_entries;
    // A datagram is the message plus its frame (epoch, counter, tag).
    config.max_message_bytes = crate::wire::MAX_PAYLOAD_BYTES;
    config.snapshot_check = LoadTable::decodes;
    config.validate().map_err(StartError::Flags)?;
    Ok(config)
}

/// One process per data dir: two nodes appending to the same log would corrupt it.
fn lock_data_dir(dir: &std::path::Path) -> Result<File, StartError> {
    let fail = |what: &'static str| {
        move |source| {
            StartError::data_dir(dir)(DataDirProblem::Io {
                file: "LOCK",
                what,
                source,
            })
        }
    };
    std::fs::create_dir_all(dir).map_err(fail("cannot create the dir"))?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))
        .map_err(fail("cannot open"))?;
    file.try_lock()
        .map_err(|_| StartError::data_dir(dir)(DataDirProblem::InUse))?;
    Ok(file)
}

/// Election timeouts must differ between nodes and between restarts.
fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::NodeId;
    use crate::wire::Datagram;

    fn settings() -> NodeSettings {
        let nodes = Nodes::parse("A 127.0.0.1:1\nB 127.0.0.1:2\nC 127.0.0.1:3\n", "test")
            .expect("valid nodes");
        NodeSettings {
            id: "A".into(),
            nodes,
            data_dir: PathBuf::from("unused"),
            dead_after: Duration::from_secs(3),
            forget_after: Duration::from_secs(86_400),
            heartbeat: Duration::from_millis(50),
            election_min: Duration::from_millis(150),
            election_max: Duration::from_millis(300),
            max_n: 100,
            snapshot_entries: 100,
            auth: Auth::Insecure,
        }
    }

    /// A format 1 data dir named the vote by the candidate's position in
    /// nodes.txt; the node reads it by the candidate's name-derived id, and
    /// writes it so before anything else can read it. Without the translation
    /// the node would hold a vote for no node (and could vote again in that
    /// term for the real candidate's rival, or refuse it).
    #[test]
    fn a_format_1_vote_by_position_is_translated_to_the_named_id_and_kept() {
        use crate::raft::HardState;
        use crate::storage::MemDir;
        let mut disk = MemDir::new();
        disk.write_new("format", b"raftlb data dir format 1\n")
            .expect("memdir");
        {
            let (mut storage, _) = Storage::open(disk.clone()).expect("a new dir opens");
            storage
                .set_hard_state(HardState {
                    term: 9,
                    vote: Some(2),
                    commit: 0,
                })
                .and_then(|()| storage.sync())
                .expect("memdir");
        }
        let now = Instant::now();
        let logic = NodeLogic::open(&settings(), disk.clone(), 1, 7, now).expect("opens");
        let b = crate::nodes::node_id("B");
        assert_eq!(logic.raft().vote(), Some(b));
        assert_eq!(logic.raft().term(), 9);
        drop(logic);
        disk.crash(1);
        let (_, restored) = Storage::open(disk.clone()).expect("reopens");
        assert_eq!(restored.hard_state.vote, Some(b), "written and synced");
        let logic = NodeLogic::open(&settings(), disk, 2, 7, now).expect("opens again");
        assert_eq!(
            logic.raft().vote(),
            Some(b),
            "format 2 is not translated twice"
        );
    }

    /// A node back from a long absence lacks the address of a member added
    /// meanwhile, and its UDP door drops that member's datagrams: the leader
    /// among them could never bring it up to date (a chaos run: B, down during
    /// a replace of A by F, restarted with A-E in its log while F led, and
    /// stayed without a leader). A peer it asks for votes names the members;
    /// while it knows no leader, the unknown ones join its address book.
    #[test]
    fn a_node_without_a_leader_admits_the_members_a_peer_names() {
        use crate::auth::frame::{self, Header};
        use crate::raft::{Message, MessageBody};
        use crate::storage::MemDir;
        let id = crate::nodes::node_id;
        let (b, f) = (id("B"), id("F"));
        let f_addr: SocketAddr = "127.0.0.1:6".parse().expect("an address");
        let now = Instant::now();
        let mut logic = NodeLogic::open(&settings(), MemDir::new(), 1, 7, now).expect("opens");
        let shared = Arc::clone(logic.shared());
        // A heartbeat from F, as the receiving thread sees it.
        let heartbeat = Datagram::Raft(Message {
            from: f,
            incarnation: 1,
            to: id("A"),
            term: 3,
            body: MessageBody::Heartbeat {
                commit: 0,
                read_seq: 0,
            },
        });
        let payload = crate::wire::encode_datagram(&heartbeat).expect("encodes");
        let header = Header {
            epoch: 1,
            counter: 0,
        };
        let bytes = frame::seal(&Auth::Insecure, f, id("A"), header, &payload);
        let mut windows = udp::Windows::default();
        let check = |windows: &mut udp::Windows| udp::check(&shared, windows, f_addr, &bytes);
        assert!(matches!(
            check(&mut windows),
            Err(udp::Dropped::UnknownSource)
        ));
        let members = vec![
            ("F".to_string(), f_addr.to_string()),
            // A known member's address stays the book's own.
            ("B".to_string(), "127.0.0.1:66".to_string()),
        ];
        logic.on_inbound(
            now,
            udp::Inbound {
                from: b,
                datagram: Datagram::Members { from: b, members },
            },
        );
        let book = crate::locks::read(&shared.book).clone();
        assert_eq!(book.raft_id_at(f_addr), Some(f));
        assert_eq!(
            book.raft_id_at("127.0.0.1:2".parse().expect("an address")),
            Some(b)
        );
        assert_eq!(
            book.raft_id_at("127.0.0.1:66".parse().expect("an address")),
            None
        );
        let inbound = check(&mut windows).expect("F's datagram is admitted now");
        logic.on_inbound(now, inbound);
        assert_eq!(logic.raft().leader(), Some(f), "and F is followed");
        // With a leader known, a member named is not taken in.
        let g = ("G".to_string(), "127.0.0.1:7".to_string());
        logic.on_inbound(
            now,
            udp::Inbound {
                from: b,
                datagram: Datagram::Members {
                    from: b,
                    members: vec![g],
                },
            },
        );
        let book = crate::locks::read(&shared.book).clone();
        assert_eq!(book.raft_id_of("G"), None);
    }

    /// The other half: a node that knows a leader names its members to a
    /// peer that asks for votes, once per `MEMBERS_RESEND`, and not to the
    /// leader itself.
    #[test]
    fn a_node_with_a_leader_names_its_members_to_a_peer_asking_for_votes() {
        use crate::raft::{Message, MessageBody};
        use crate::storage::MemDir;
        let id = crate::nodes::node_id;
        let (a, b, c) = (id("A"), id("B"), id("C"));
        let now = Instant::now();
        let mut logic = NodeLogic::open(&settings(), MemDir::new(), 1, 7, now).expect("opens");
        let message = |from, term, body| udp::Inbound {
            from,
            datagram: Datagram::Raft(Message {
                from,
                incarnation: 1,
                to: a,
                term,
                body,
            }),
        };
        let pre_vote = || MessageBody::RequestVote {
            pre_vote: true,
            last_log_index: 0,
            last_log_term: 0,
            transfer: false,
            bound: None,
        };
        let members_to = |outbox: Vec<(NodeId, Datagram)>, to: NodeId| {
            outbox
                .into_iter()
                .filter_map(|(t, d)| match d {
                    Datagram::Members { from, members } if t == to => Some((from, members)),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        // No leader known: nothing to tell.
        logic.on_inbound(now, message(b, 1, pre_vote()));
        assert!(members_to(logic.take_outbox(), b).is_empty());
        let heartbeat = MessageBody::Heartbeat {
            commit: 0,
            read_seq: 0,
        };
        logic.on_inbound(now, message(c, 2, heartbeat));
        assert_eq!(logic.raft().leader(), Some(c));
        logic.take_outbox();
        logic.on_inbound(now, message(b, 3, pre_vote()));
        let told = members_to(logic.take_outbox(), b);
        assert_eq!(told.len(), 1, "{told:?}");
        let names: Vec<&str> = told[0].1.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!((told[0].0, names), (a, vec!["A", "B", "C"]));
        assert_eq!(told[0].1[2].1, "127.0.0.1:3");
        // Not again within MEMBERS_RESEND, again after it; never to the leader.
        logic.on_inbound(now, message(b, 3, pre_vote()));
        assert!(members_to(logic.take_outbox(), b).is_empty());
        let later = now + event_loop::MEMBERS_RESEND;
        logic.on_inbound(later, message(b, 3, pre_vote()));
        assert_eq!(members_to(logic.take_outbox(), b).len(), 1);
        logic.on_inbound(later, message(c, 3, pre_vote()));
        assert!(members_to(logic.take_outbox(), c).is_empty());
    }

    /// The core refuses what the load table cannot restore, so a forged
    /// snapshot never reaches the data dir (where it stopped the node from
    /// starting): the runtime must hand it the table's decoder.
    #[test]
    fn the_core_is_given_the_load_tables_snapshot_check() {
        let nodes = Nodes::parse("A 127.0.0.1:1\nB 127.0.0.1:2\nC 127.0.0.1:3\n", "test")
            .expect("valid nodes");
        let settings = NodeSettings {
            id: "A".into(),
            nodes,
            data_dir: PathBuf::from("unused"),
            dead_after: Duration::from_secs(3),
            forget_after: Duration::from_secs(86_400),
            heartbeat: Duration::from_millis(50),
            election_min: Duration::from_millis(150),
            election_max: Duration::from_millis(300),
            max_n: 100,
            snapshot_entries: 100,
            auth: Auth::Insecure,
        };
        let me = crate::nodes::node_id("A");
        let config = raft_config(&settings, me).expect("valid settings");
        assert!(!(config.snapshot_check)(b"\x07garbage"));
        assert!((config.snapshot_check)(&LoadTable::new().snapshot()));
    }
}
