//! The UDP side of a node: one thread receives datagrams, checks where they come
//! from and who sent them, decodes them and hands them to the event loop; the
//! loop sends with [`send`].
//!
//! Every datagram is hostile until checked, in this order: its source address
//! must be a node's in the address book (the members in force, nodes.txt's,
//! and members a peer named while this node had no leader: see
//! `Datagram::Members`); its frame's tag must verify under the cluster
//! key for that node as sender and this node as receiver (`auth::frame`); its
//! epoch and counter must pass that peer's replay window; only then is its
//! payload decoded, and its sender fields must agree with its source. Anything
//! else is dropped and counted by reason, never a crash. No byte of a datagram
//! is decoded before its tag is verified.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};

use super::shared::{LoopCounters, Shared};
use crate::auth::frame::{self, Header};
use crate::auth::replay::{Reject, ReplayWindow};
use crate::nodes::Nodes;
use crate::raft::NodeId;
use crate::wire::{self, Datagram};

/// A datagram that passed every check, with the sender's Raft id.
#[derive(Debug)]
pub struct Inbound {
    pub from: NodeId,
    pub datagram: Datagram,
}

/// How often the receiver wakes to look at the stop flag.
const RECV_POLL: Duration = Duration::from_millis(100);

/// Starts the receiving thread; it ends when `stop` is set.
pub(crate) fn spawn_receiver(
    socket: UdpSocket,
    shared: Arc<Shared>,
    tx: Sender<Inbound>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    socket.set_read_timeout(Some(RECV_POLL))?;
    std::thread::Builder::new()
        .name("udp-recv".into())
        .spawn(move || receive_loop(&socket, &shared, &tx, &stop))
}

fn receive_loop(socket: &UdpSocket, shared: &Shared, tx: &Sender<Inbound>, stop: &AtomicBool) {
    // One byte more than the largest valid datagram, so an oversized one is seen
    // as oversized rather than silently truncated into something that decodes.
    let mut buf = vec![0u8; wire::MAX_DATAGRAM_BYTES + 1];
    let metrics = &shared.counters;
    let mut windows = Windows::default();
    while !stop.load(Ordering::Relaxed) {
        let (len, source) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) => {
                // ICMP errors from earlier sends surface here on some systems.
                log::debug!("udp receive: {e}");
                continue;
            }
        };
        LoopCounters::add(&metrics.datagrams_received);
        let inbound = match check(shared, &mut windows, source, &buf[..len]) {
            Ok(inbound) => inbound,
            Err(drop) => {
                LoopCounters::add(drop.counter(metrics));
                log::debug!("dropped a datagram from {source}: {drop:?}");
                continue;
            }
        };
        match tx.try_send(inbound) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => LoopCounters::add(&metrics.datagrams_dropped_queue_full),
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}

/// Why a datagram was dropped; each reason has its counter.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// Its source is no node's address in nodes.txt.
    UnknownSource,
    /// Too short for a frame, or its tag does not verify.
    Auth(frame::FrameError),
    /// Authentic, but seen before or from an older boot of its sender.
    Replay(Reject),
    /// Authentic and new, but not a datagram, or its sender fields lie.
    Decode(String),
}

impl Dropped {
    /// The counter of `raftlb_datagrams_dropped_by_reason_total` it adds to.
    pub fn counter<'m>(&self, metrics: &'m super::shared::LoopCounters) -> &'m AtomicU64 {
        match self {
            Dropped::UnknownSource => &metrics.datagrams_dropped_unknown_source,
            Dropped::Auth(_) => &metrics.datagrams_dropped_auth,
            Dropped::Replay(_) => &metrics.datagrams_dropped_replay,
            Dropped::Decode(_) => &metrics.datagrams_dropped_decode,
        }
    }
}

/// The replay window of each peer, by Raft id: only ids of the address book
/// get one, and those of nodes that left the book are dropped when the map
/// grows past what the book can hold, so it stays bounded.
#[derive(Default)]
pub struct Windows {
    by_id: HashMap<NodeId, ReplayWindow>,
}

/// Most windows kept: the book holds at most nodes.txt's and the
/// configuration's nodes (64 each).
const MAX_WINDOWS: usize = 2 * crate::raft::MAX_MEMBERS;

impl Windows {
    fn get(&mut self, id: NodeId, book: &Nodes) -> &mut ReplayWindow {
        if !self.by_id.contains_key(&id) && self.by_id.len() >= MAX_WINDOWS {
            self.by_id.retain(|known, _| book.get(*known).is_some());
        }
        self.by_id.entry(id).or_default()
    }
}

/// Every check a received datagram passes before the event loop sees it, in
/// order: source (a node of the address book), tag, that node's replay window,
/// decode, sender fields. Nothing of `bytes` is decoded before its tag verified.
pub fn check(
    shared: &Shared,
    windows: &mut Windows,
    source: SocketAddr,
    bytes: &[u8],
) -> Result<Inbound, Dropped> {
    let book = crate::locks::read(&shared.book);
    let from = book.raft_id_at(source).ok_or(Dropped::UnknownSource)?;
    let (header, payload) =
        frame::open(&shared.auth, from, shared.me, bytes).map_err(Dropped::Auth)?;
    windows
        .get(from, &book)
        .accept(header)
        .map_err(Dropped::Replay)?;
    drop(book);
    match wire::decode_datagram(payload) {
        Ok(datagram) if sender_matches(&datagram, from, shared.me) => {
            Ok(Inbound { from, datagram })
        }
        Ok(_) => Err(Dropped::Decode(
            "sender fields do not match the source".into(),
        )),
        Err(e) => Err(Dropped::Decode(e.to_string())),
    }
}

/// A datagram speaks for the node at its source address only, and only to us.
fn sender_matches(datagram: &Datagram, from: NodeId, me: NodeId) -> bool {
    match datagram {
        Datagram::Raft(m) => m.from == from && m.to == me,
        Datagram::Reports { from: claimed, .. }
        | Datagram::ProposeNote { from: claimed, .. }
        | Datagram::NoteRefused { from: claimed, .. }
        | Datagram::ForgetServer { from: claimed, .. }
        | Datagram::Members { from: claimed, .. } => *claimed == from,
    }
}

/// This boot's place in its stream of datagrams: the epoch (recorded in the
/// data dir before the first send) and the next counter.
pub struct Outbound {
    epoch: u64,
    next_counter: AtomicU64,
}

impl Outbound {
    pub fn new(epoch: u64) -> Outbound {
        Outbound {
            epoch,
            next_counter: AtomicU64::new(0),
        }
    }

    /// The header of the next datagram; None once 2^64 were sent (never in
    /// practice, but a counter that wrapped would be refused as a replay).
    fn next(&self) -> Option<Header> {
        let counter = self
            .next_counter
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_add(1))
            .ok()?;
        Some(Header {
            epoch: self.epoch,
            counter,
        })
    }
}

/// Encodes, frames (signs) and sends one datagram to node `to`. Failures are
/// logged at debug: UDP is lossy by contract and Raft retries.
pub fn send(socket: &UdpSocket, shared: &Shared, to: NodeId, datagram: &Datagram) {
    let Some(entry) = crate::locks::read(&shared.book).get(to).cloned() else {
        return;
    };
    let payload = match wire::encode_datagram(datagram) {
        Ok(payload) => payload,
        // The core cuts batches to fit (checked by the wire tests); reaching this
        // is a bug worth a loud line, not a crash.
        Err(e) => return log::error!("not sending to {}: {e}", entry.id),
    };
    let Some(header) = shared.outbound.next() else {
        return log::error!(
            "not sending to {}: the datagram counter is exhausted, restart the node",
            entry.id
        );
    };
    let bytes = frame::seal(&shared.auth, shared.me, to, header, &payload);
    match socket.send_to(&bytes, entry.socket) {
        Ok(_) => LoopCounters::add(&shared.counters.datagrams_sent),
        Err(e) => log::debug!("send to {}: {e}", entry.id),
    }
}

#[cfg(test)]
#[path = "tests_udp.rs"]
mod tests;
