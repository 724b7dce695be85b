//! The UDP side of a node: one thread receives datagrams, checks where they come
//! from, decodes them and hands them to the event loop; the loop sends with
//! [`send`].
//!
//! Every datagram is hostile until checked: one from an address that is not in
//! nodes.txt, one that does not decode, or one whose sender field disagrees with
//! its source address is dropped and counted, never a crash.

use std::io::ErrorKind;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};

use super::shared::{Metrics, Shared};
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
pub fn spawn_receiver(
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
    let metrics = &shared.metrics;
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
        Metrics::add(&metrics.datagrams_received);
        let Some(from) = shared.nodes.raft_id_at(source) else {
            Metrics::add(&metrics.datagrams_dropped_unknown_source);
            log::debug!("dropped a datagram from {source}: not in nodes.txt");
            continue;
        };
        let datagram = match wire::decode_datagram(&buf[..len]) {
            Ok(d) if sender_matches(&d, from, shared.me) => d,
            Ok(_) => {
                Metrics::add(&metrics.datagrams_dropped_decode);
                log::debug!("dropped a datagram from {source}: sender fields do not match");
                continue;
            }
            Err(e) => {
                Metrics::add(&metrics.datagrams_dropped_decode);
                log::debug!("dropped a datagram from {source}: {e}");
                continue;
            }
        };
        match tx.try_send(Inbound { from, datagram }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => Metrics::add(&metrics.datagrams_dropped_queue_full),
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}

/// A datagram speaks for the node at its source address only, and only to us.
fn sender_matches(datagram: &Datagram, from: NodeId, me: NodeId) -> bool {
    match datagram {
        Datagram::Raft(m) => m.from == from && m.to == me,
        Datagram::Reports { from: claimed, .. }
        | Datagram::ProposeNote { from: claimed, .. }
        | Datagram::NoteRefused { from: claimed, .. }
        | Datagram::ForgetServer { from: claimed, .. } => *claimed == from,
    }
}

/// Encodes and sends one datagram to node `to`. Failures are logged at debug:
/// UDP is lossy by contract and Raft retries.
pub fn send(socket: &UdpSocket, shared: &Shared, to: NodeId, datagram: &Datagram) {
    let Some(entry) = shared.nodes.get(to) else {
        return;
    };
    match wire::encode_datagram(datagram) {
        Ok(bytes) => match socket.send_to(&bytes, entry.socket) {
            Ok(_) => Metrics::add(&shared.metrics.datagrams_sent),
            Err(e) => log::debug!("send to {}: {e}", entry.id),
        },
        // The core cuts batches to fit (checked by the wire tests); reaching this
        // is a bug worth a loud line, not a crash.
        Err(e) => log::error!("not sending to {}: {e}", entry.id),
    }
}
