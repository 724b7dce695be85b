//! The Raft core: election, replication, commit, snapshots, read index and
//! leadership transfer, as a pure, deterministic value.
//!
//! The core does no I/O: no sockets, threads, clock, files or codec. It is driven by
//! four verbs and hands its wishes back in one value:
//!
//! - [`Raft::tick`] advances logical time (the runtime calls it every 10 ms);
//! - [`Raft::step`] takes a message from a peer;
//! - [`Raft::propose`] appends a command (leader only);
//! - [`Raft::read_index`] starts a linearizable read;
//! - [`Raft::ready`] returns a [`Ready`]: state to persist, messages to send,
//!   entries to apply, reads to serve; [`Raft::advance`] confirms the caller
//!   persisted it.
//!
//! Randomness (election timeouts) comes from a seed in the caller's hands, so a
//! run of the simulator replays exactly from its seed.

mod config;
mod election;
mod log;
mod membership;
mod node;
mod progress;
mod read;
mod replication;
mod rng;
mod snapshot;
mod types;

pub use config::{accept_any_snapshot, Config, ConfigError, DEFAULT_SNAPSHOT_ENTRIES};
pub use log::RaftLog;
pub use membership::{
    Member, Membership, MembershipChange, MembershipError,
    MAX_ENCODED_BYTES as MAX_MEMBERSHIP_BYTES, MAX_LABEL_BYTES, MAX_MEMBERS,
};
pub use node::{Raft, RestoreError, RestoredState};
pub use progress::{Progress, ProgressState};
pub use rng::Rng;
pub use types::*;
