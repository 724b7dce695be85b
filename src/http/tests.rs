//! Tests of the HTTP server wrapper on real loopback sockets.

use super::*;

#[test]
fn bind_on_a_taken_port_says_address_in_use() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let addr = taken
        .local_addr()
        .expect("a bound listener has an address")
        .to_string();
    let err = bind(&addr)
        .err()
        .expect("a taken port cannot be bound twice");
    assert_eq!(
        err.to_string(),
        format!("cannot listen on {addr}: address in use")
    );
}

#[test]
fn error_reason_stays_on_one_line() {
    let mut body = String::new();
    error(400, "bad\r\nthing")
        .into_reader()
        .read_to_string(&mut body)
        .expect("reading a memory buffer cannot fail");
    assert_eq!(body, "bad  thing\n");
}

/// A client that sees 4xx/5xx as answers and never waits long.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// Serves `handler` on a free loopback port; returns the server and its URL.
fn serve_on_loopback(
    threads: usize,
    handler: impl Fn(&mut Request) -> Reply + Send + Sync + 'static,
) -> (Serving, String) {
    let server = bind("127.0.0.1:0").expect("bind a free loopback port");
    let serving = serve(server, threads, Arc::new(move |r| Answer::Now(handler(r))));
    let url = format!(
        "http://{}",
        serving.addr().expect("a tcp server has an address")
    );
    (serving, url)
}

fn body_length_or_error(request: &mut Request) -> Reply {
    match read_body(request, 8) {
        Ok(body) => text(200, body.len().to_string()),
        Err(e) => e.reply(),
    }
}

#[test]
fn body_over_the_limit_is_refused_with_413() {
    let (_serving, url) = serve_on_loopback(2, body_length_or_error);
    let mut at_limit = agent().post(&url).send("12345678").expect("server answers");
    assert_eq!(at_limit.status(), 200);
    assert_eq!(
        at_limit.body_mut().read_to_string().expect("utf-8 body"),
        "8"
    );
    let mut over = agent()
        .post(&url)
        .send("123456789")
        .expect("server answers");
    assert_eq!(over.status(), 413);
    assert_eq!(
        over.body_mut().read_to_string().expect("utf-8 body"),
        "request body over 8 bytes\n"
    );
}

#[test]
fn chunked_body_over_the_limit_is_refused_without_reading_it_all() {
    // No Content-Length: only the read limit can catch it.
    let (serving, _url) = serve_on_loopback(2, body_length_or_error);
    let addr = serving.addr().expect("a tcp server has an address");
    let mut conn = TcpStream::connect(addr).expect("connect to the test server");
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set a read timeout");
    let request = "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
                   9\r\n123456789\r\n0\r\n\r\n";
    io::Write::write_all(&mut conn, request.as_bytes()).expect("send the request");
    let mut head = [0u8; 12];
    conn.read_exact(&mut head).expect("read the status line");
    assert_eq!(&head, b"HTTP/1.1 413");
}

#[test]
fn a_panicking_handler_answers_500_and_keeps_its_thread() {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handler_calls = Arc::clone(&calls);
    let handler = move |_: &mut Request| {
        if handler_calls.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("first call fails on purpose");
        }
        text(200, "ok")
    };
    // One thread: the second answer proves the thread survived the panic.
    let (_serving, url) = serve_on_loopback(1, handler);
    assert_eq!(
        agent().get(&url).call().expect("server answers").status(),
        500
    );
    assert_eq!(
        agent().get(&url).call().expect("server answers").status(),
        200
    );
}

#[test]
fn stop_joins_the_threads_and_releases_the_port() {
    let (serving, _url) = serve_on_loopback(4, |_: &mut Request| text(200, "ok"));
    let addr = serving
        .addr()
        .expect("a tcp server has an address")
        .to_string();
    serving.stop();
    // tiny_http's accept thread drops the listener just after the server: retry
    // briefly rather than race it.
    let rebound = (0..50).any(|_| {
        thread::sleep(Duration::from_millis(20));
        bind(&addr).is_ok()
    });
    assert!(rebound, "{addr} still taken a second after stop");
}

#[test]
fn stop_within_gives_up_on_a_request_that_runs_too_long() {
    let handler = |_: &mut Request| {
        thread::sleep(Duration::from_secs(2));
        text(200, "late")
    };
    let (serving, url) = serve_on_loopback(1, handler);
    let client = thread::spawn(move || agent().get(&url).call().map(|r| r.status()));
    // Let the request reach the handler before stopping.
    thread::sleep(Duration::from_millis(300));
    let started = std::time::Instant::now();
    assert!(!serving.stop_within(Duration::from_millis(100)));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        client.join().expect("client thread").expect("answered"),
        200
    );
}

#[test]
fn nudge_target_of_all_interfaces_is_loopback() {
    let any: SocketAddr = "0.0.0.0:80".parse().expect("valid address");
    assert_eq!(
        nudge_target(any),
        "127.0.0.1:80".parse().expect("valid address")
    );
    let any6: SocketAddr = "[::]:80".parse().expect("valid address");
    assert_eq!(
        nudge_target(any6),
        "[::1]:80".parse().expect("valid address")
    );
}
