//! raftlb: a load balancer whose nodes agree on the servers' CPU load with Raft.
//!
//! What it offers: a pure Raft core ([`raft`]) and its durable storage
//! ([`storage`]); the replicated load table ([`table`]) and the pure balancing
//! policy ([`balance`]); the runtime that runs a node ([`runtime`], whose
//! [`runtime::NodeHandle`] the HTTP side ([`server`], over [`http`]) uses); and
//! the pieces of the other programs (the [`daemon`], the [`client`], the
//! [`primes`] and computing [`places`] of the worker). Each module's own first line (rustdoc's module
//! list) says what it is.
//!
//! The map (layers, entry points, flows, invariants) is ARCHITECTURE.md at the
//! root of the repository; it is the one place that describes the layout.

pub mod auth;
pub mod balance;
pub mod client;
pub mod daemon;
pub mod http;
pub mod lincheck;
pub mod locks;
pub mod nodes;
pub mod places;
pub mod primes;
pub mod raft;
pub mod report;
pub mod runtime;
pub mod server;
pub mod status;
pub mod storage;
pub mod table;
pub mod wire;
