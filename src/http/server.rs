//! The accept loop and the connection caps.
//!
//! One thread accepts; each admitted connection gets a thread of its own
//! (named `http-conn`, with a small stack) that serves it until it closes.
//! Admission counts open connections in all and per source address: beyond
//! either cap the connection is answered 503 with a one-line reason and closed,
//! with non-blocking calls only, so a flood cannot stall the accept loop.
//! The loop outlives resource exhaustion: when `accept` fails with EMFILE or
//! ENFILE, or a thread cannot be started, it logs (at most once every
//! [`EXHAUSTED_LOG_EVERY`]), waits [`EXHAUSTED_BACKOFF`] and goes on.
//!
//! The listener has a receive timeout of [`ACCEPT_POLL`] (on Linux `accept`
//! honours it), so a stop is seen within that without waking the loop by
//! connecting to ourselves; an idle keep-alive connection is woken by shutting
//! its reading side down.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{connection, BindError, Cap, Event, Limits, Service};

/// The accept queue's length. With std's 128, a flood of a thousand
/// connections (the benchmark's slowloris) filled it faster than the accept
/// loop could refuse them: the kernel dropped new clients' SYNs, which cost an
/// honest client a 1 s retransmission. Refusing beyond the caps is cheap; the
/// queue only has to hold a burst.
pub(crate) const LISTEN_BACKLOG: i32 = 1024;
/// How often the accept loop looks at the stop flag while no one connects.
pub(crate) const ACCEPT_POLL: Duration = Duration::from_millis(100);
/// The pause after `accept` or a thread start failed for lack of resources:
/// long enough not to spin, short enough that a freed descriptor is used soon.
pub(crate) const EXHAUSTED_BACKOFF: Duration = Duration::from_millis(50);
/// At most one log line per this while resources stay exhausted.
pub(crate) const EXHAUSTED_LOG_EVERY: Duration = Duration::from_secs(10);

/// A bound listening socket; [`serve`] serves it.
pub struct Listener {
    inner: TcpListener,
    addr: SocketAddr,
}

impl Listener {
    /// The address and port it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Listens on `addr` (`HOST:PORT`; port 0 picks a free one). The error reads
/// "cannot listen on 127.0.0.1:13337: address in use".
pub fn bind(addr: &str) -> Result<Listener, BindError> {
    let failed = |source| BindError {
        addr: addr.to_string(),
        source,
    };
    let inner = TcpListener::bind(addr).map_err(failed)?;
    let socket = socket2::SockRef::from(&inner);
    // Linux lets a listening socket's backlog be set again: std's 128 is
    // raised (the kernel caps it at net.core.somaxconn).
    socket.listen(LISTEN_BACKLOG).map_err(failed)?;
    socket.set_read_timeout(Some(ACCEPT_POLL)).map_err(failed)?;
    let local = inner.local_addr().map_err(failed)?;
    Ok(Listener { inner, addr: local })
}

/// The accept loop and its connections. Dropping it stops accepting and wakes
/// idle connections without waiting for them.
pub struct Serving {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    registry: Arc<Registry>,
}

/// Serves `listener` with `service` under `limits` until stopped.
pub fn serve(listener: Listener, limits: Limits, service: impl Service) -> Serving {
    let stopping = Arc::new(AtomicBool::new(false));
    let registry = Arc::new(Registry::default());
    let context = Arc::new(connection::Context {
        service: Box::new(service),
        limits,
        stopping: Arc::clone(&stopping),
    });
    let addr = listener.addr;
    let accept = {
        let registry = Arc::clone(&registry);
        thread::Builder::new()
            .name("http-accept".to_string())
            .spawn(move || accept_until_stopped(&listener.inner, &context, &registry))
            .expect("the OS can start the accept thread at startup")
    };
    Serving {
        addr,
        stopping,
        accept: Some(accept),
        registry,
    }
}

impl Serving {
    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes idle connections, and waits for the requests in
    /// flight to be answered. The port is free when it returns.
    pub fn stop(mut self) {
        self.signal_stop();
        self.registry.wait_empty(None);
    }

    /// Like [`Serving::stop`], but waits at most `wait_max` for the requests in
    /// flight (a prime near max-n can take seconds). False if some were still
    /// running: they end with the process.
    pub fn stop_within(mut self, wait_max: Duration) -> bool {
        self.signal_stop();
        self.registry.wait_empty(Some(Instant::now() + wait_max))
    }

    /// Ends the accept loop (within [`ACCEPT_POLL`]) and wakes every
    /// connection waiting for a request; one in a handler finishes its answer.
    fn signal_stop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            if accept.join().is_err() {
                log::error!("the http accept thread panicked");
            }
        }
        self.registry.shut_reading();
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

fn accept_until_stopped(
    listener: &TcpListener,
    context: &Arc<connection::Context>,
    registry: &Arc<Registry>,
) {
    let mut exhausted = ExhaustedLog::default();
    while !context.stopping.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, remote)) => {
                if let Err(e) = admit(stream, remote, context, registry) {
                    exhausted.note(&format!("cannot start a connection thread: {e}"));
                    thread::sleep(EXHAUSTED_BACKOFF);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if is_exhaustion(&e) => {
                exhausted.note(&format!("cannot accept connections: {e}"));
                thread::sleep(EXHAUSTED_BACKOFF);
            }
            // A connection reset before it was accepted, and the like.
            Err(e) => log::debug!("accept failed: {e}"),
        }
    }
}

/// Out of descriptors or memory: the errors that waiting can cure.
fn is_exhaustion(e: &io::Error) -> bool {
    const ENOMEM: i32 = 12;
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    const ENOBUFS: i32 = 105;
    matches!(e.raw_os_error(), Some(ENOMEM | ENFILE | EMFILE | ENOBUFS))
}

/// Admits `stream` under the caps and starts its thread, or refuses it with 503.
/// Err only when the thread could not be started (the connection is closed).
fn admit(
    stream: TcpStream,
    remote: SocketAddr,
    context: &Arc<connection::Context>,
    registry: &Arc<Registry>,
) -> io::Result<()> {
    let stream = Arc::new(stream);
    let slot = match registry.enter(&stream, remote.ip(), &context.limits) {
        Ok(slot) => slot,
        Err(cap) => {
            context.service.observe(Event::Refused(cap));
            refuse(&stream, cap);
            context.service.observe(Event::Answered(503));
            return Ok(());
        }
    };
    let context = Arc::clone(context);
    thread::Builder::new()
        .name("http-conn".to_string())
        .stack_size(context.limits.stack_bytes)
        .spawn(move || {
            connection::serve_connection(&stream, remote, &context);
            drop(slot);
        })
        .map(drop)
}

/// Writes a 503 without ever blocking (a fresh socket's send buffer is empty,
/// so it fits), drains what the client already sent so that the close is a FIN
/// rather than a reset that could destroy the answer, and closes.
fn refuse(stream: &TcpStream, cap: Cap) {
    let reason = match cap {
        Cap::Total => "server at its connection limit; try again later\n",
        Cap::PerSource => "too many connections from your address; try again later\n",
    };
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{reason}",
        reason.len()
    );
    let mut stream: &TcpStream = stream;
    if stream.set_nonblocking(true).is_ok() {
        let _ = stream.write_all(answer.as_bytes());
        let _ = stream.shutdown(Shutdown::Write);
        let mut drain = [0u8; 4096];
        let _ = stream.read(&mut drain);
    }
}

/// Rate-limits the log line about exhausted resources.
#[derive(Default)]
struct ExhaustedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl ExhaustedLog {
    fn note(&mut self, what: &str) {
        if self.last.is_some_and(|t| t.elapsed() < EXHAUSTED_LOG_EVERY) {
            self.suppressed += 1;
            return;
        }
        log::error!(
            "{what}; retrying every {EXHAUSTED_BACKOFF:?} ({} more since the last message)",
            self.suppressed
        );
        self.last = Some(Instant::now());
        self.suppressed = 0;
    }
}

/// The open connections: counts for the caps, and the streams, so that a stop
/// can wake the threads that wait for a request.
#[derive(Default)]
struct Registry {
    open: Mutex<Open>,
    emptied: Condvar,
}

#[derive(Default)]
struct Open {
    streams: HashMap<u64, Arc<TcpStream>>,
    /// Entries are removed at zero, so this is never larger than `streams`.
    per_source: HashMap<IpAddr, usize>,
    next_id: u64,
}

/// One admitted connection; leaving frees its place under the caps.
struct Slot {
    registry: Arc<Registry>,
    id: u64,
    source: IpAddr,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Open> {
        crate::locks::lock(&self.open)
    }

    fn enter(
        self: &Arc<Self>,
        stream: &Arc<TcpStream>,
        source: IpAddr,
        limits: &Limits,
    ) -> Result<Slot, Cap> {
        let mut open = self.lock();
        if open.streams.len() >= limits.connections_max {
            return Err(Cap::Total);
        }
        let from_source = open.per_source.get(&source).copied().unwrap_or(0);
        if from_source >= limits.connections_per_source_max {
            return Err(Cap::PerSource);
        }
        open.per_source.insert(source, from_source + 1);
        let id = open.next_id;
        open.next_id += 1;
        open.streams.insert(id, Arc::clone(stream));
        Ok(Slot {
            registry: Arc::clone(self),
            id,
            source,
        })
    }

    /// Wakes every connection blocked reading: its read returns end-of-file.
    fn shut_reading(&self) {
        for stream in self.lock().streams.values() {
            let _ = stream.shutdown(Shutdown::Read);
        }
    }

    /// Waits until no connection is open, or `deadline`; true if none is.
    fn wait_empty(&self, deadline: Option<Instant>) -> bool {
        let mut open = self.lock();
        while !open.streams.is_empty() {
            let wait = match deadline {
                None => Duration::from_secs(1),
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return false,
                },
            };
            open = crate::locks::wait_timeout(&self.emptied, open, wait);
        }
        true
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.registry.lock();
        open.streams.remove(&self.id);
        if let Some(count) = open.per_source.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                open.per_source.remove(&self.source);
            }
        }
        if open.streams.is_empty() {
            self.registry.emptied.notify_all();
        }
    }
}
