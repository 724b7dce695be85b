//! The client side of raftlb's HTTP.
//!
//! - [`admin`]: `raftlb server forget ID`, signed.
//! - [`auth`]: the cluster key of `raftlb --key`, signing admin request bodies.
//! - [`discover`]: where the nodes are: `--nodes`, `RAFTLB_NODES`, `./nodes.txt`.
//! - [`member`]: `raftlb member list|add|remove|replace`, signed, and the
//!   configuration from `/status` merged into a node list.
//! - [`http`]: ureq agents with timeouts and plain calls, shared with the daemon.
//! - [`failover`]: try the nodes in order, or all at once, until one answers.
//! - [`prime`]: `raftlb prime N`.
//! - [`note`]: `raftlb note get|set`.
//! - [`view`]: `raftlb status`, every node's `/status` as tables.
//! - [`bench`](mod@bench): `raftlb bench prime|note`, the closed-loop load generator of the
//!   benchmarks, on the minimal keep-alive connection of `crate::http::conn`
//!   (not ureq), so that it costs little next to what it measures.

pub mod admin;
pub mod auth;
pub mod bench;
pub mod discover;
pub mod failover;
pub mod http;
pub mod member;
pub mod note;
pub mod prime;
pub mod view;
