//! Hostile request heads against the HTTP server: a million random and mutated
//! heads through the pure parser (`raftlb::http::parse_head`), and a few
//! thousand through a real socket to a running server.
//!
//! The parser must never panic and must say one of three things of every
//! input: a head (whose length is within the input), incomplete, or an error
//! whose status is one the server answers. Through the socket, every request
//! must get an answer or a close, and the server must answer `/health` after.
//! Inputs come from a small seeded PRNG; a failure prints the seed and index.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use raftlb::http::{self, parse_head, Limits, Reply, Request, Service};

/// How many inputs the parser is fed.
const PARSER_INPUTS: usize = 1_000_000;
/// How many requests go through the socket.
const SOCKET_REQUESTS: usize = 3_000;
/// Client threads sending them.
const SOCKET_CLIENTS: usize = 8;
const SEED: u64 = 0x5eed_1234_abcd_0001;

/// Valid heads the mutations start from.
const VALID: &[&str] = &[
    "GET /health HTTP/1.1\r\nHost: localhost:34572\r\n\r\n",
    "GET /prime/1000 HTTP/1.0\r\n\r\n",
    "PUT /note HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nOrigin: http://127.0.0.1\r\n\r\nhello",
    "POST /note HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "POST /report HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
    "HEAD /status?x=1&y=%20 HTTP/1.1\r\nHost: [::1]:80\r\nConnection: close\r\n\r\n",
];

/// Fragments that steer mutations towards the interesting corners.
const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\r\n\r\n",
    b":",
    b" ",
    b"\n",
    b"\0",
    b"\xff",
    b"Content-Length: ",
    b"Content-Length: 4611686018427387904\r\n",
    b"Content-Length: 99999999999999999999\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"Expect: 100-continue\r\n",
    b"Connection: close\r\n",
    b"HTTP/1.1",
    b"HTTP/9.9",
    b"ffffffffffffffffff\r\n",
];

/// xorshift64*: small, seeded, good enough to spread mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One input: pure random bytes one time in eight, else a valid head with a
/// few mutations.
fn input(rng: &mut Rng) -> Vec<u8> {
    if rng.below(8) == 0 {
        let len = rng.below(300);
        return (0..len).map(|_| rng.next() as u8).collect();
    }
    let mut bytes = VALID[rng.below(VALID.len())].as_bytes().to_vec();
    for _ in 0..1 + rng.below(4) {
        mutate(rng, &mut bytes);
    }
    bytes
}

fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    let at = rng.below(bytes.len() + 1);
    match rng.below(6) {
        0 if at < bytes.len() => bytes[at] ^= 1 << rng.below(8),
        1 => bytes.insert(at, rng.next() as u8),
        2 if at < bytes.len() => {
            bytes.remove(at);
        }
        3 => {
            let token = TOKENS[rng.below(TOKENS.len())];
            bytes.splice(at..at, token.iter().copied());
        }
        4 => bytes.truncate(at),
        _ => {
            // Repeat a slice: long lines, many headers.
            let end = (at + rng.below(64)).min(bytes.len());
            let piece = bytes[at..end].to_vec();
            for _ in 0..rng.below(200) {
                bytes.splice(at..at, piece.iter().copied());
            }
        }
    }
}

#[test]
fn a_million_hostile_heads_parse_or_are_incomplete_or_refused_without_panic() {
    let mut rng = Rng(SEED);
    let started = Instant::now();
    let (mut parsed, mut incomplete, mut refused) = (0, 0, 0);
    for index in 0..PARSER_INPUTS {
        let bytes = input(&mut rng);
        match parse_head(&bytes) {
            Ok(Some((head, len))) => {
                assert!(len <= bytes.len(), "seed {SEED:#x} input {index}: length");
                assert!(!head.method.is_empty(), "seed {SEED:#x} input {index}");
                parsed += 1;
            }
            Ok(None) => incomplete += 1,
            Err(e) => {
                assert!(
                    [400, 431, 501].contains(&e.status()),
                    "seed {SEED:#x} input {index}: {e}"
                );
                refused += 1;
            }
        }
    }
    println!(
        "{PARSER_INPUTS} heads in {:?}: {parsed} parsed, {incomplete} incomplete, {refused} refused",
        started.elapsed()
    );
    // Each kind must really be exercised, or the mutations prove little.
    for (kind, count) in [
        ("parsed", parsed),
        ("incomplete", incomplete),
        ("refused", refused),
    ] {
        assert!(count > PARSER_INPUTS / 100, "only {count} {kind}");
    }
}

/// Answers `ok`, and the length of a body for routes that take one.
struct Echo;

impl Service for Echo {
    fn body_limit(&self, method: &str, _path: &str) -> usize {
        if matches!(method, "PUT" | "POST") {
            1024
        } else {
            0
        }
    }

    fn handle(&self, request: &Request) -> Reply {
        http::text(200, format!("ok {}", request.body().len()))
    }
}

/// Sends `bytes`, closes the sending side, and reads until the server closes.
/// True if an answer started with a status line, or the server closed.
fn answered_or_closed(addr: SocketAddr, bytes: &[u8]) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    // The server may close before it has read everything: a failed write is fine.
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(Shutdown::Write);
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) if got.len() < 1 << 20 => got.extend_from_slice(&chunk[..n]),
            Ok(_) => return Err("an endless answer".into()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(format!("neither answered nor closed: {e}")),
        }
    }
    if got.is_empty() || got.starts_with(b"HTTP/1.1 ") {
        Ok(())
    } else {
        Err(format!(
            "not an answer: {:?}",
            String::from_utf8_lossy(&got)
        ))
    }
}

#[test]
fn thousands_of_mutated_requests_over_a_socket_are_answered_or_closed() {
    let listener = http::bind("127.0.0.1:0").expect("bind a free loopback port");
    let addr = listener.local_addr();
    let limits = Limits {
        head_timeout: Duration::from_secs(2),
        body_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let serving = http::serve(listener, limits, Echo);
    let clients: Vec<_> = (0..SOCKET_CLIENTS)
        .map(|client| {
            thread::spawn(move || {
                let seed = SEED ^ (client as u64 + 1);
                let mut rng = Rng(seed);
                for index in 0..SOCKET_REQUESTS / SOCKET_CLIENTS {
                    let bytes = input(&mut rng);
                    if let Err(e) = answered_or_closed(addr, &bytes) {
                        panic!(
                            "seed {seed:#x} request {index} ({:?}): {e}",
                            String::from_utf8_lossy(&bytes)
                        );
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a client thread failed");
    }
    let mut health = TcpStream::connect(addr).expect("connect for /health");
    health
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("set a read timeout");
    health
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .expect("send /health");
    let mut answer = String::new();
    health.read_to_string(&mut answer).expect("read /health");
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    serving.stop();
}
