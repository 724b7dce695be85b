//! The client side of raftlb's HTTP: the agent and calls every program uses
//! (`http`); the `raftlb` commands follow in this module.

pub mod http;
