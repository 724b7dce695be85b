//! `Conn` against a tiny server on loopback port 0 that answers each request
//! with canned bytes: framing, reconnection, and bad answers as errors.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Conn, NoAnswer};

const GET: &[u8] = b"GET /100 HTTP/1.1\r\nHost: test\r\n\r\n";
/// Long enough never to fire on a working test, short enough that a hang shows.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A canned reply, and whether the server closes the connection after it.
struct Reply(Vec<u8>, bool);

fn keep(bytes: &[u8]) -> Reply {
    Reply(bytes.to_vec(), false)
}

fn close(bytes: &[u8]) -> Reply {
    Reply(bytes.to_vec(), true)
}

/// Serves `replies` in order, one per request read, on as many connections as
/// the client opens; the thread ends after the last reply once the client has
/// closed. Returns the address and the count of accepted connections.
struct Canned {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Canned {
    fn start(replies: Vec<Reply>) -> Canned {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback port 0");
        let addr = listener.local_addr().expect("bound");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let thread = std::thread::spawn(move || {
            let mut replies = replies.into_iter().peekable();
            while replies.peek().is_some() {
                let (mut stream, _) = listener.accept().expect("accept");
                count.fetch_add(1, Ordering::SeqCst);
                while read_request(&mut stream) {
                    let Some(Reply(bytes, close)) = replies.next() else {
                        break;
                    };
                    // A client that gave up early may have closed already.
                    if stream.write_all(&bytes).is_err() {
                        break;
                    }
                    if close {
                        let _ = stream.shutdown(Shutdown::Both);
                        break;
                    }
                }
            }
        });
        Canned {
            addr,
            accepted,
            thread: Some(thread),
        }
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Canned {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            if !std::thread::panicking() {
                thread.join().expect("the canned server ends cleanly");
            }
        }
    }
}

/// Reads one request head; false when the client closed first.
fn read_request(stream: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    true
}

fn conn(server: &Canned) -> Conn {
    Conn::new(server.addr, TIMEOUT)
}

#[test]
fn content_length_bodies_are_skipped_exactly_on_one_connection() {
    let server = Canned::start(vec![
        keep(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n104729"),
        keep(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length:  15 \r\n\r\nno live server\n"),
        keep(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"),
    ]);
    let mut conn = conn(&server);
    assert_eq!(conn.exchange(GET).expect("first"), 200);
    assert_eq!(conn.exchange(GET).expect("second"), 503);
    assert_eq!(conn.exchange(GET).expect("third"), 204);
    drop(conn);
    assert_eq!(server.connections(), 1);
}

#[test]
fn chunked_bodies_with_several_chunks_and_a_trailer_are_skipped_exactly() {
    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
        3\r\n104\r\n3;ext=1\r\n729\r\nA\r\n0123456789\r\n0\r\nX-Trailer: yes\r\n\r\n";
    let server = Canned::start(vec![
        keep(chunked),
        keep(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"),
    ]);
    let mut conn = conn(&server);
    assert_eq!(conn.exchange(GET).expect("chunked"), 200);
    // A byte left over (or taken too many) would garble the next status line.
    assert_eq!(conn.exchange(GET).expect("next"), 201);
    drop(conn);
    assert_eq!(server.connections(), 1);
}

#[test]
fn bodies_are_kept_when_asked_for_however_they_are_framed() {
    let server = Canned::start(vec![
        keep(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n104729"),
        keep(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n541\r\n0\r\n\r\n"),
        keep(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"),
        close(b"HTTP/1.0 502 Bad Gateway\r\n\r\nto the end"),
        keep(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n0123456789012345678901234567890123456789"),
    ]);
    let mut conn = conn(&server);
    let got = |c: &mut Conn| {
        c.exchange_keeping_body(GET, 32)
            .map(|(s, b)| (s, b.to_vec()))
    };
    assert_eq!(got(&mut conn).expect("length"), (200, b"104729".to_vec()));
    assert_eq!(got(&mut conn).expect("chunked"), (200, b"541".to_vec()));
    // Skipping does not keep a body, and the next kept body is its own.
    assert_eq!(conn.exchange(GET).expect("skipped"), 200);
    assert_eq!(
        got(&mut conn).expect("until close"),
        (502, b"to the end".to_vec())
    );
    let over = got(&mut conn).expect_err("40 bytes is over the limit of 32");
    assert_eq!(over.failure, NoAnswer::Framing);
}

#[test]
fn connection_close_makes_the_next_request_reconnect() {
    let server = Canned::start(vec![
        // The server leaves it open: only the header tells the client to move.
        keep(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"),
        // HTTP/1.0 without keep-alive, the body running to the close.
        close(b"HTTP/1.0 200 OK\r\n\r\nto the end"),
        keep(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ]);
    let mut conn = conn(&server);
    for i in 0..3 {
        assert_eq!(conn.exchange(GET).expect("each answer"), 200, "request {i}");
    }
    drop(conn);
    assert_eq!(server.connections(), 3);
}

#[test]
fn a_keep_alive_connection_closed_idle_by_the_server_is_retried_once() {
    // No `Connection: close`, yet the server closes: as after an idle timeout.
    let server = Canned::start(vec![
        close(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        keep(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ]);
    let mut conn = conn(&server);
    assert_eq!(conn.exchange(GET).expect("first"), 200);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        conn.exchange(GET).expect("retried on a new connection"),
        200
    );
    drop(conn);
    assert_eq!(server.connections(), 2);
}

fn failure_of(reply: Reply) -> NoAnswer {
    let server = Canned::start(vec![reply]);
    let error = conn(&server).exchange(GET).expect_err("a bad answer");
    assert!(!error.detail.is_empty());
    error.failure
}

#[test]
fn garbage_framing_is_an_error() {
    let garbage: [&[u8]; 7] = [
        b"HELLO\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
    ];
    for bytes in garbage {
        let text = String::from_utf8_lossy(bytes);
        assert_eq!(failure_of(close(bytes)), NoAnswer::Framing, "{text}");
    }
}

#[test]
fn answers_over_the_limits_are_errors_not_waits() {
    // Kept open: only the limit, not the server's close, can end these.
    let mut endless_head = b"HTTP/1.1 200 OK\r\n".to_vec();
    while endless_head.len() < 20 * 1024 {
        endless_head.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    assert_eq!(failure_of(keep(&endless_head)), NoAnswer::Framing);
    let huge_length = b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n";
    assert_eq!(failure_of(keep(huge_length)), NoAnswer::Framing);
    let huge_chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n200000\r\n";
    assert_eq!(failure_of(keep(huge_chunk)), NoAnswer::Framing);
    let mut endless_chunk_line = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    endless_chunk_line.resize(endless_chunk_line.len() + 4096, b'0');
    assert_eq!(failure_of(keep(&endless_chunk_line)), NoAnswer::Framing);
}

#[test]
fn an_answer_cut_short_is_an_io_error() {
    let cut = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
    assert_eq!(failure_of(close(cut)), NoAnswer::Io);
    assert_eq!(failure_of(close(b"HTTP/1.1 200 OK\r\n")), NoAnswer::Io);
}

#[test]
fn a_silent_server_is_a_timeout_and_a_closed_port_a_connect_error() {
    // Connections complete in the backlog; nobody ever reads or answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut conn = Conn::new(
        silent.local_addr().expect("bound"),
        Duration::from_millis(200),
    );
    let error = conn.exchange(GET).expect_err("no answer");
    assert_eq!(error.failure, NoAnswer::Timeout, "{}", error.detail);
    let refusing = silent.local_addr().expect("bound");
    drop(silent);
    let error = Conn::new(refusing, TIMEOUT)
        .exchange(GET)
        .expect_err("nothing listens");
    assert_eq!(error.failure, NoAnswer::Connect, "{}", error.detail);
}
