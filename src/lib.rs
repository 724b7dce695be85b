//! raftlb: a load balancer whose nodes agree on the servers' CPU load with Raft.
//!
//! Layout (one direction of dependency, top uses bottom):
//!
//! - [`raft`]: the pure Raft core. No sockets, threads, clock, files or codec:
//!   ticks, messages and proposals in; messages, state to persist and entries to
//!   apply out.
//! - [`storage`]: the data dir: hard state, log and snapshots, each record with its
//!   length and CRC32, fsync before anything is promised.
//! - [`nodes`]: nodes.txt, the fixed membership.
//! - [`auth`]: the cluster key: key file, HMAC tags, the datagram frame and the
//!   replay window.
//! - [`report`], [`status`]: the JSON a daemon sends and `/status` returns.
//! - [`wire`]: the one place bincode is used: datagrams, commands, snapshots.
//! - [`table`]: the replicated state machine: the load table and the note.
//! - [`balance`]: the pure balancing policy: which server a prime request goes
//!   to, from the agreed table and what this node observed of each server.
//! - [`runtime`]: the threads around the core: UDP, the event loop, shared view.
//! - [`client`]: HTTP calls with timeouts, and the `raftlb` commands.
//! - [`daemon`]: the load daemon: /proc sampling, health check, reports.
//! - [`http`]: the HTTP/1.1 server of nodes and workers (a thread per connection,
//!   every limit in `http::Limits`), the reply helpers, and the keep-alive client.
//! - [`primes`]: the N-th prime the workers compute, and parsing N from user input.
//! - [`locks`]: the one lock-poison policy (a poisoned lock is used as it is).
//! - [`lincheck`]: a linearizability checker for the note (a register), used by
//!   the tests to judge histories recorded against a real cluster.
//!
//! ARCHITECTURE.md at the root of the repository gives the bird's-eye view.

pub mod auth;
pub mod balance;
pub mod client;
pub mod daemon;
pub mod http;
pub mod lincheck;
pub mod locks;
pub mod nodes;
pub mod primes;
pub mod raft;
pub mod report;
pub mod runtime;
pub mod server;
pub mod status;
pub mod storage;
pub mod table;
pub mod wire;
