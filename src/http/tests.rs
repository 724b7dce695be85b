//! Tests of the HTTP server on real loopback sockets: one per limit, each
//! failing without the defence it names.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::*;

/// A body the `/big` route answers: larger than a socket's buffers soon add up to.
const BIG_BODY_BYTES: usize = 64 * 1024;
/// Longest any single answer may take in these tests.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// A service for the tests: routes with known limits, and a record of events.
#[derive(Default)]
struct TestService {
    events: Mutex<Vec<Event>>,
}

impl Service for TestService {
    fn body_limit(&self, method: &str, path: &str) -> usize {
        match (method, path) {
            ("POST", "/small") => 8,
            ("POST", _) => 1024,
            _ => 0,
        }
    }

    fn handle(&self, request: &Request) -> Reply {
        match request.path() {
            "/health" => text(200, "ok"),
            "/big" => Reply::new(200, vec![b'x'; BIG_BODY_BYTES]),
            "/panic" => panic!("this route fails on purpose"),
            "/sleep" => {
                thread::sleep(Duration::from_secs(2));
                text(200, "late")
            }
            _ => text(200, format!("{} bytes", request.body().len())),
        }
    }

    fn observe(&self, event: Event) {
        self.events.lock().expect("not poisoned").push(event);
    }
}

impl TestService {
    fn count(&self, event: Event) -> usize {
        let events = self.events.lock().expect("not poisoned");
        events.iter().filter(|e| **e == event).count()
    }
}

/// Serves the test service on a free port of 127.0.0.1.
fn start(limits: Limits) -> (Serving, Arc<TestService>) {
    let service = Arc::new(TestService::default());
    let listener = bind("127.0.0.1:0").expect("bind a free loopback port");
    (serve(listener, limits, Arc::clone(&service)), service)
}

/// Limits with timeouts short enough for a test to wait them out.
fn short_limits() -> Limits {
    Limits {
        head_timeout: Duration::from_millis(800),
        body_timeout: Duration::from_millis(800),
        write_timeout: Duration::from_millis(800),
        idle_timeout: Duration::from_millis(800),
        ..Limits::default()
    }
}

/// A connection to `addr` from source address `source` (any 127.x works on Linux).
fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("create a socket");
    let from: SocketAddr = format!("{source}:0").parse().expect("valid source");
    socket.bind(&from.into()).expect("bind the source address");
    socket
        .connect_timeout(&addr.into(), ANSWER_WAIT)
        .expect("connect to the test server");
    let stream = TcpStream::from(socket);
    stream
        .set_read_timeout(Some(ANSWER_WAIT))
        .expect("set a read timeout");
    stream
}

/// Reads one answer: its status and body, or None if the connection closed
/// (or was reset) before a whole one came.
fn read_answer(stream: &mut TcpStream) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + ANSWER_WAIT;
    while Instant::now() < deadline {
        if let Some(answer) = complete_answer(&buf) {
            return Some(answer);
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    None
}

fn complete_answer(buf: &[u8]) -> Option<(u16, String)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status = head.get(9..12)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let body = buf.get(end..end + length)?;
    Some((status, String::from_utf8_lossy(body).into_owned()))
}

/// Sends `request` on a new connection and reads the answer.
fn exchange(addr: SocketAddr, request: &[u8]) -> Option<(u16, String)> {
    let mut stream = connect_from("127.0.0.1", addr);
    stream.write_all(request).ok()?;
    read_answer(&mut stream)
}

/// True once the connection is closed by the server (end of file or reset).
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    !matches!(stream.read(&mut byte), Ok(n) if n > 0)
}

/// `GET /health` from `source`, and how long the answer took.
fn health_from(source: &str, addr: SocketAddr) -> (Option<(u16, String)>, Duration) {
    let started = Instant::now();
    let mut stream = connect_from(source, addr);
    let answer = stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .ok()
        .and_then(|()| read_answer(&mut stream));
    (answer, started.elapsed())
}

fn assert_health_within_a_second(source: &str, addr: SocketAddr) {
    let (answer, took) = health_from(source, addr);
    assert_eq!(answer, Some((200, "ok".to_string())), "took {took:?}");
    assert!(took < Duration::from_secs(1), "/health took {took:?}");
}

#[test]
fn bind_on_a_taken_port_says_address_in_use() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let addr = taken.local_addr().expect("bound").to_string();
    let err = bind(&addr)
        .err()
        .expect("a taken port cannot be bound twice");
    assert_eq!(
        err.to_string(),
        format!("cannot listen on {addr}: address in use")
    );
}

#[test]
fn the_accept_queue_holds_a_burst_of_connections_before_any_is_accepted() {
    // Bound but not served: nothing accepts, so every connection waits in
    // the kernel's queue. With std's backlog of 128 the 130th connect hangs
    // (its SYN dropped, retried after 1 s) and times out here.
    let listener = bind("127.0.0.1:0").expect("bind a free port");
    let addr = listener.local_addr();
    let burst = 512;
    let mut held = Vec::with_capacity(burst);
    for i in 0..burst {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(stream) => held.push(stream),
            Err(e) => panic!("connection {i} of {burst} was not queued: {e}"),
        }
    }
    assert_eq!(held.len(), burst);
}

#[test]
fn error_reason_stays_on_one_line() {
    assert_eq!(error(400, "bad\r\nthing").body(), b"bad  thing\n");
}

#[test]
fn an_invalid_reply_header_is_left_out() {
    let reply = with_header(text(200, "x"), "X-Server", "a\r\nSet-Cookie: y");
    assert_eq!(reply.header("x-server"), None);
    let reply = with_header(reply, "Bad Name", "v");
    assert_eq!(reply.header("bad name"), None);
}

#[test]
fn a_huge_content_length_on_get_is_413_at_once_and_the_server_lives() {
    let (serving, service) = start(Limits::default());
    let request = b"GET /health HTTP/1.1\r\nHost: t\r\nContent-Length: 4611686018427387904\r\n\r\n";
    let mut stream = connect_from("127.0.0.1", serving.addr());
    stream.write_all(request).expect("send the head");
    let (status, body) = read_answer(&mut stream).expect("an answer");
    assert_eq!(status, 413, "{body}");
    assert!(closed_by_server(&mut stream), "413 closes the connection");
    assert_eq!(service.count(Event::BodyTooLarge), 1);
    assert_health_within_a_second("127.0.0.1", serving.addr());
}

#[test]
fn a_body_within_the_limit_is_served_and_one_over_is_413() {
    let (serving, _service) = start(Limits::default());
    let at_limit = b"POST /small HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n12345678";
    assert_eq!(
        exchange(serving.addr(), at_limit),
        Some((200, "8 bytes".into()))
    );
    let over = b"POST /small HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\n123456789";
    assert_eq!(exchange(serving.addr(), over).map(|a| a.0), Some(413));
}

#[test]
fn a_chunked_body_is_read_and_one_over_the_limit_is_413() {
    let (serving, _service) = start(Limits::default());
    let within = b"POST /small HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
                   3;x=y\r\nabc\r\n5\r\n12345\r\n0\r\nTrailer: 1\r\n\r\n";
    assert_eq!(
        exchange(serving.addr(), within),
        Some((200, "8 bytes".into()))
    );
    let over = b"POST /small HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5\r\n12345\r\n4\r\n6789\r\n0\r\n\r\n";
    assert_eq!(exchange(serving.addr(), over).map(|a| a.0), Some(413));
}

#[test]
fn ambiguous_or_broken_framing_is_400() {
    let (serving, _service) = start(Limits::default());
    for request in [
        &b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc"[..],
        b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GARBAGE\r\n\r\n",
    ] {
        let answer = exchange(serving.addr(), request).map(|a| a.0);
        assert_eq!(answer, Some(400), "{}", String::from_utf8_lossy(request));
    }
}

#[test]
fn a_9_kib_head_is_431() {
    let (serving, service) = start(Limits::default());
    let request = format!(
        "GET /health HTTP/1.1\r\nHost: t\r\nX-Fill: {}\r\n\r\n",
        "a".repeat(9 * 1024)
    );
    let answer = exchange(serving.addr(), request.as_bytes());
    assert_eq!(answer.map(|a| a.0), Some(431));
    assert_eq!(service.count(Event::HeadTooLarge), 1);
}

#[test]
fn a_header_line_without_end_is_431_once_the_limit_is_read() {
    // The line never ends: a server reading lines without a limit would wait.
    let (serving, _service) = start(Limits::default());
    let mut stream = connect_from("127.0.0.1", serving.addr());
    stream
        .write_all(format!("GET / HTTP/1.1\r\nX-Long: {}", "a".repeat(HEAD_BYTES_MAX)).as_bytes())
        .expect("send a head as long as the limit");
    assert_eq!(read_answer(&mut stream).map(|a| a.0), Some(431));
}

#[test]
fn a_100_kb_header_line_is_431_and_the_server_lives() {
    let (serving, _service) = start(Limits::default());
    let mut stream = connect_from("127.0.0.1", serving.addr());
    let mut writer = stream.try_clone().expect("clone the stream");
    let sender = thread::spawn(move || {
        let line = format!("GET / HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(100_000));
        // The server stops reading after its limit: the end may be refused.
        let _ = writer.write_all(line.as_bytes());
    });
    assert_eq!(read_answer(&mut stream).map(|a| a.0), Some(431));
    sender.join().expect("the sender thread");
    assert_health_within_a_second("127.0.0.1", serving.addr());
}

#[test]
fn more_than_64_header_lines_is_431() {
    let (serving, _service) = start(Limits::default());
    let mut request = "GET / HTTP/1.1\r\n".to_string();
    for i in 0..=HEADERS_MAX {
        request.push_str(&format!("X-{i}: v\r\n"));
    }
    request.push_str("\r\n");
    assert_eq!(
        exchange(serving.addr(), request.as_bytes()).map(|a| a.0),
        Some(431)
    );
}

#[test]
fn a_slowloris_head_is_cut_at_the_head_timeout_in_all() {
    let limits = short_limits();
    let (serving, service) = start(limits.clone());
    let mut stream = connect_from("127.0.0.1", serving.addr());
    let started = Instant::now();
    // A byte every 100 ms: each read is quick, only a deadline for the whole
    // head cuts it.
    let mut cut = false;
    for byte in b"GET /health HTTP/1.1\r\nX-Slow: ".iter().cycle().take(100) {
        if stream.write_all(&[*byte]).is_err() {
            cut = true;
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let cut_after = started.elapsed();
    assert!(cut || closed_by_server(&mut stream), "never cut");
    assert!(
        cut_after < limits.head_timeout + Duration::from_secs(2),
        "cut after {cut_after:?}"
    );
    assert_eq!(service.count(Event::TimedOut(Phase::Head)), 1);
}

#[test]
fn a_slow_body_is_cut_at_the_body_timeout() {
    let (serving, service) = start(short_limits());
    let mut stream = connect_from("127.0.0.1", serving.addr());
    stream
        .write_all(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n")
        .expect("send the head");
    for _ in 0..30 {
        if stream.write_all(b"a").is_err() {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert!(closed_by_server(&mut stream));
    assert_eq!(service.count(Event::TimedOut(Phase::Body)), 1);
}

#[test]
fn a_client_that_never_reads_is_cut_at_the_write_timeout() {
    let (serving, service) = start(short_limits());
    let mut stream = connect_from("127.0.0.1", serving.addr());
    // 400 answers of 64 KiB, never read: far more than the socket buffers hold.
    let mut sent = 0;
    stream
        .set_write_timeout(Some(Duration::from_millis(200)))
        .expect("set a write timeout");
    while sent < 400
        && stream
            .write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
            .is_ok()
    {
        sent += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while service.count(Event::TimedOut(Phase::Write)) == 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(service.count(Event::TimedOut(Phase::Write)), 1);
}

#[test]
fn an_idle_keepalive_connection_is_closed_after_the_idle_timeout() {
    let (serving, service) = start(short_limits());
    let mut stream = connect_from("127.0.0.1", serving.addr());
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send");
    assert_eq!(read_answer(&mut stream).map(|a| a.0), Some(200));
    let started = Instant::now();
    assert!(closed_by_server(&mut stream));
    let idle = started.elapsed();
    assert!(
        idle >= Duration::from_millis(700) && idle < Duration::from_secs(3),
        "{idle:?}"
    );
    assert_eq!(
        service.count(Event::TimedOut(Phase::Head)),
        0,
        "idle is no timeout"
    );
}

#[test]
fn three_hundred_slowloris_connections_do_not_stop_health_from_another_address() {
    // Room for all 300 from one address, so that they really are held open.
    let limits = Limits {
        connections_per_source_max: 1000,
        ..Limits::default()
    };
    let (serving, _service) = start(limits);
    let addr = serving.addr();
    let mut slow: Vec<TcpStream> = (0..300).map(|_| connect_from("127.0.0.2", addr)).collect();
    for (i, stream) in slow.iter_mut().enumerate() {
        // Half stop inside the head, half inside a declared body.
        let part: &[u8] = if i % 2 == 0 {
            b"GET /health HTTP/1.1\r\nX-Slow: "
        } else {
            b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nabc"
        };
        stream.write_all(part).expect("send part of a request");
    }
    for _ in 0..3 {
        assert_health_within_a_second("127.0.0.3", addr);
        for stream in &mut slow {
            let _ = stream.write_all(b"a");
        }
    }
}

#[test]
fn a_connection_pipelining_5000_requests_does_not_stop_health_from_another_address() {
    let (serving, _service) = start(Limits::default());
    let addr = serving.addr();
    let mut pipeliner = connect_from("127.0.0.2", addr);
    let requests = b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n".repeat(5000);
    let writer = thread::spawn(move || {
        pipeliner
            .set_write_timeout(Some(Duration::from_secs(3)))
            .expect("set a write timeout");
        // Never reads: the server's answers fill the buffers, then it stalls.
        let _ = pipeliner.write_all(&requests);
        pipeliner
    });
    thread::sleep(Duration::from_millis(300));
    assert_health_within_a_second("127.0.0.3", addr);
    drop(writer.join().expect("the pipelining thread"));
}

#[test]
fn the_129th_connection_from_one_address_gets_503_and_another_address_is_served() {
    let (serving, service) = start(Limits::default());
    let addr = serving.addr();
    let held: Vec<TcpStream> = (0..CONNECTIONS_PER_SOURCE_MAX)
        .map(|_| connect_from("127.0.0.2", addr))
        .collect();
    let mut refused = connect_from("127.0.0.2", addr);
    let (status, reason) = read_answer(&mut refused).expect("a 503");
    assert_eq!(status, 503);
    assert!(
        reason.contains("too many connections from your address"),
        "{reason}"
    );
    assert_eq!(service.count(Event::Refused(Cap::PerSource)), 1);
    assert_health_within_a_second("127.0.0.3", addr);
    drop(held);
}

#[test]
fn connections_over_the_total_cap_get_503() {
    let limits = Limits {
        connections_max: 10,
        ..Limits::default()
    };
    let (serving, service) = start(limits);
    let addr = serving.addr();
    let held: Vec<TcpStream> = (0..10)
        .map(|i| connect_from(&format!("127.0.1.{i}"), addr))
        .collect();
    let mut refused = connect_from("127.0.2.1", addr);
    assert_eq!(read_answer(&mut refused).map(|a| a.0), Some(503));
    assert_eq!(service.count(Event::Refused(Cap::Total)), 1);
    drop(held);
    // Places come free as connections close.
    let deadline = Instant::now() + ANSWER_WAIT;
    while health_from("127.0.2.2", addr).0.map(|a| a.0) != Some(200) {
        assert!(Instant::now() < deadline, "no place came free");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn stop_within_returns_promptly_with_idle_keepalive_connections_open() {
    let (serving, _service) = start(Limits::default());
    let addr = serving.addr();
    let mut idle: Vec<TcpStream> = (0..8).map(|_| connect_from("127.0.0.1", addr)).collect();
    for stream in &mut idle {
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("send");
        assert_eq!(read_answer(stream).map(|a| a.0), Some(200));
    }
    let started = Instant::now();
    assert!(serving.stop_within(Duration::from_secs(5)));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(closed_by_server(&mut idle[0]));
    // The port is free again.
    assert!(bind(&addr.to_string()).is_ok());
}

#[test]
fn stop_within_gives_up_on_a_request_that_runs_too_long() {
    let (serving, _service) = start(Limits::default());
    let addr = serving.addr();
    let client = thread::spawn(move || exchange(addr, b"GET /sleep HTTP/1.1\r\nHost: t\r\n\r\n"));
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    assert!(!serving.stop_within(Duration::from_millis(100)));
    assert!(started.elapsed() < Duration::from_secs(1));
    let answer = client.join().expect("client thread");
    assert_eq!(answer, Some((200, "late".into())));
}

#[test]
fn a_panicking_handler_answers_500_and_the_connection_goes_on() {
    let (serving, _service) = start(Limits::default());
    let mut stream = connect_from("127.0.0.1", serving.addr());
    // One at a time: `read_answer` drops whatever follows the answer it reads.
    stream
        .write_all(b"GET /panic HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send the failing request");
    assert_eq!(read_answer(&mut stream).map(|a| a.0), Some(500));
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send the next request");
    assert_eq!(read_answer(&mut stream), Some((200, "ok".into())));
}

#[test]
fn http_1_0_and_connection_close_close_after_the_answer() {
    let (serving, _service) = start(Limits::default());
    for request in [
        &b"GET /health HTTP/1.0\r\n\r\n"[..],
        b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    ] {
        let mut stream = connect_from("127.0.0.1", serving.addr());
        stream.write_all(request).expect("send");
        assert_eq!(read_answer(&mut stream), Some((200, "ok".into())));
        assert!(closed_by_server(&mut stream));
    }
}

#[test]
fn head_is_answered_without_a_body() {
    let (serving, _service) = start(Limits::default());
    let mut stream = connect_from("127.0.0.1", serving.addr());
    stream
        .write_all(
            b"HEAD /health HTTP/1.1\r\nHost: t\r\n\r\nGET /health HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        .expect("send");
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).ends_with("\r\n\r\nok") {
        let n = stream.read(&mut buf).expect("read answers");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert_eq!(text.matches("\r\n\r\nok").count(), 1, "{text}");
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let (serving, _service) = start(Limits::default());
    let mut stream = connect_from("127.0.0.1", serving.addr());
    stream
        .write_all(
            b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
        )
        .expect("send the head");
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).expect("read 100 Continue");
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"abc").expect("send the body");
    assert_eq!(read_answer(&mut stream), Some((200, "3 bytes".into())));
}
