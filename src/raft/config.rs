//! The core's settings, in logical ticks and bytes: the runtime decides how long a
//! tick lasts (10 ms by default, so a heartbeat every 5 ticks is 50 ms).

use super::membership::Membership;
use super::types::{NodeId, ENTRY_OVERHEAD_BYTES, MESSAGE_OVERHEAD_BYTES};

/// How a Raft node behaves. `Config::new` gives the defaults raftlb runs with.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// This node's incarnation: drawn at random when its data dir was created,
    /// carried by every message it sends (`membership` says why). Never 0.
    pub incarnation: u64,
    /// This node's data dir started empty (it drew its incarnation then): it
    /// may be a member whose disk was lost, which has forgotten the votes it
    /// gave and the entries it acknowledged, and whose log may lack entries
    /// the cluster committed. Until its configuration binds it to its own
    /// incarnation (`Raft::is_joining`), it grants a vote (its own included)
    /// only to a candidate whose configuration binds it so, or to one whose
    /// log holds no configuration yet (a new cluster's first moments, before
    /// the first leader wrote the bootstrap one): never to a candidate that
    /// may be a voter left behind before the binding. The runtime sets it
    /// for every new data dir; false for a data dir that held a log before.
    pub joining: bool,
    /// The bootstrap configuration (nodes.txt): in force until the log or a
    /// snapshot holds a configuration. The first leader writes it into the log,
    /// so from then on the log alone says who the members are.
    pub bootstrap: Membership,
    /// A leader sends heartbeats every this many ticks.
    pub heartbeat_ticks: u64,
    /// Election timeouts are drawn from `election_ticks_min..election_ticks_max`.
    pub election_ticks_min: u64,
    pub election_ticks_max: u64,
    /// Run a pre-vote round before a real election, so a node that was cut off
    /// cannot disrupt a healthy leader when it comes back.
    pub pre_vote: bool,
    /// A leader steps down when it has not heard from a majority within an
    /// election timeout; a follower that heard from a live leader within the minimum
    /// election timeout refuses votes.
    pub check_quorum: bool,
    /// No message the core builds is larger than this (bounded by the estimates of
    /// `Entry::size_bound` and `MESSAGE_OVERHEAD_BYTES`).
    pub max_message_bytes: usize,
    /// At most this many appends are in flight to one follower.
    pub max_inflight_appends: usize,
    /// Snapshots are sent in chunks of at most this many bytes.
    pub snapshot_chunk_bytes: usize,
    /// The state machine is asked for a snapshot once this many applied entries sit
    /// in the log after the last snapshot.
    pub snapshot_threshold_entries: u64,
    /// ... or once the applied entries after it hold this many bytes of data:
    /// without it, a thousand 32 KiB notes (about 64 MiB, counting storage's
    /// copy) would sit in memory before a snapshot.
    pub snapshot_threshold_bytes: u64,
    /// The state machine's check of a snapshot received from the leader: the
    /// assembled data is handed to it before the core installs the snapshot (and
    /// so before the caller writes it), and one it refuses is dropped. A forged
    /// or corrupt chunk sequence then never reaches the data dir, where it would
    /// stop the node from starting again. The core itself cannot decode a
    /// snapshot; the runtime gives the load table's decoder.
    pub snapshot_check: fn(&[u8]) -> bool,
}

/// Why a [`Config`] cannot work; `Display` is the one-line reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The node is not in the bootstrap configuration.
    NotAMember(NodeId),
    /// The bootstrap configuration breaks a rule (a voter listed twice, none).
    Bootstrap(super::membership::MembershipError),
    /// A setting breaks its rule.
    Setting {
        setting: &'static str,
        rule: &'static str,
    },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::NotAMember(id) => {
                write!(f, "node {id} is not in the bootstrap configuration")
            }
            ConfigError::Bootstrap(e) => write!(f, "bootstrap configuration: {e}"),
            ConfigError::Setting { setting, rule } => write!(f, "{setting} {rule}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The check of a core that does not know its state machine: every snapshot.
pub fn accept_any_snapshot(_data: &[u8]) -> bool {
    true
}

/// Applied entries between snapshots. Each compaction writes the snapshot and
/// rewrites the log, four fsyncs on the event loop (3-12 ms on this VM's disk):
/// at 1000, a leader taking 18,000 note writes a second compacted 18 times a
/// second. Entries are also memory (the core's and storage's copies, about 400
/// bytes per 100-byte note on a leader): measured after 400,000 writes from 64
/// clients, a leader's RSS was 16 MiB at 1000 and 20 MiB at 10,000, against a
/// goal of 20. The byte threshold below bounds bigger entries.
pub const DEFAULT_SNAPSHOT_ENTRIES: u64 = 5_000;

impl Config {
    /// The defaults for a cluster whose bootstrap voters are `voters`, named by
    /// their ids: heartbeat every 5 ticks, elections after 15-30 ticks (50 ms and
    /// 150-300 ms at 10 ms a tick), 60 KB datagrams. A voter listed twice shows
    /// in `validate`.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Config {
        let bootstrap = Membership::of_voters(&voters).unwrap_or_else(|_| {
            // Keep the duplicate for `validate` to name; labels are the ids.
            Membership::unchecked(&voters)
        });
        Config::with_bootstrap(id, bootstrap)
    }

    /// The defaults, for a cluster bootstrapped with `bootstrap` (names and
    /// addresses from nodes.txt).
    pub fn with_bootstrap(id: NodeId, bootstrap: Membership) -> Config {
        Config {
            id,
            incarnation: 1,
            joining: false,
            bootstrap,
            heartbeat_ticks: 5,
            election_ticks_min: 15,
            election_ticks_max: 30,
            pre_vote: true,
            check_quorum: true,
            max_message_bytes: 60_000,
            max_inflight_appends: 64,
            snapshot_chunk_bytes: 48 * 1024,
            snapshot_threshold_entries: DEFAULT_SNAPSHOT_ENTRIES,
            snapshot_threshold_bytes: 2 * 1024 * 1024,
            snapshot_check: accept_any_snapshot,
        }
    }

    /// The largest command data that fits one append message on its own.
    pub fn max_entry_data_bytes(&self) -> usize {
        self.max_message_bytes
            .saturating_sub(MESSAGE_OVERHEAD_BYTES + ENTRY_OVERHEAD_BYTES)
    }

    /// Checks the settings; the error says which one is wrong.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.bootstrap.validate().map_err(ConfigError::Bootstrap)?;
        if !self.bootstrap.contains(self.id) {
            return Err(ConfigError::NotAMember(self.id));
        }
        let bad =
            |setting: &'static str, rule: &'static str| Err(ConfigError::Setting { setting, rule });
        if self.incarnation == 0 {
            return bad("incarnation", "must not be 0");
        }
        if self.heartbeat_ticks == 0 {
            return bad("heartbeat_ticks", "must be at least 1");
        }
        if self.election_ticks_min <= self.heartbeat_ticks {
            return bad("election_ticks_min", "must exceed heartbeat_ticks");
        }
        if self.election_ticks_max <= self.election_ticks_min {
            return bad("election_ticks_max", "must exceed election_ticks_min");
        }
        if self.max_message_bytes < MESSAGE_OVERHEAD_BYTES + ENTRY_OVERHEAD_BYTES + 1 {
            return bad("max_message_bytes", "is too small for any entry");
        }
        if self.snapshot_chunk_bytes == 0
            || self.snapshot_chunk_bytes + MESSAGE_OVERHEAD_BYTES > self.max_message_bytes
        {
            return bad(
                "snapshot_chunk_bytes",
                "must be positive and fit one message",
            );
        }
        if self.max_inflight_appends == 0 {
            return bad("max_inflight_appends", "must be at least 1");
        }
        if self.snapshot_threshold_entries == 0 {
            return bad("snapshot_threshold_entries", "must be at least 1");
        }
        if self.snapshot_threshold_bytes == 0 {
            return bad("snapshot_threshold_bytes", "must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::new(1, vec![1, 2, 3, 4, 5]).validate().unwrap();
    }

    #[test]
    fn quorum_of_five_is_three() {
        assert_eq!(Config::new(1, vec![1, 2, 3, 4, 5]).bootstrap.quorum(), 3);
        assert_eq!(Config::new(1, vec![1, 2, 3, 4]).bootstrap.quorum(), 3);
        assert_eq!(Config::new(1, vec![1]).bootstrap.quorum(), 1);
        let twice = Config::new(1, vec![1, 2, 2]);
        assert!(matches!(twice.validate(), Err(ConfigError::Bootstrap(_))));
    }

    #[test]
    fn bad_settings_are_named() {
        let mut c = Config::new(9, vec![1, 2, 3]);
        assert_eq!(c.validate(), Err(ConfigError::NotAMember(9)));
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("not in the bootstrap"));
        c.id = 1;
        c.election_ticks_max = c.election_ticks_min;
        let err = c.validate().unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Setting {
                setting: "election_ticks_max",
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "election_ticks_max must exceed election_ticks_min"
        );
    }
}
