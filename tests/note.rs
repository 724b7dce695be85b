//! The replicated note on real processes: written through any node, answered
//! only once committed and applied, read back linearizably everywhere; refused
//! with a clear 4xx when the request is wrong and a 503 when there is no quorum;
//! kept through snapshots and a restart of the whole cluster. The history under
//! random kills is checked in tests/linearizability.rs.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{exclusive, request, wait_for, Cluster, Options, CLIENT};

const SETTLE: Duration = Duration::from_secs(20);

/// The snapshot threshold of these tests' nodes, small so that 1,200 writes
/// compact the log.
const SNAPSHOT_ENTRIES: u64 = 1000;

fn nodes_only() -> Cluster {
    let cluster = Cluster::start(Options {
        workers: 0,
        snapshot_entries: Some(SNAPSHOT_ENTRIES),
        ..Options::default()
    });
    cluster.wait_for_leader(SETTLE);
    cluster
}

fn put(cluster: &Cluster, i: usize, text: &[u8]) -> support::Answer {
    request("PUT", &cluster.url(i, "/note"), "text/plain", text)
        .unwrap_or_else(|| panic!("node {i} did not answer PUT /note"))
}

fn read(cluster: &Cluster, i: usize) -> support::Answer {
    request("GET", &cluster.url(i, "/note"), "text/plain", b"")
        .unwrap_or_else(|| panic!("node {i} did not answer GET /note"))
}

fn a_follower(cluster: &Cluster, leader: usize) -> usize {
    (0..cluster.ids.len())
        .find(|i| *i != leader && cluster.nodes[*i].is_some())
        .expect("a live follower")
}

#[test]
fn a_note_written_on_a_follower_is_read_back_exactly_on_every_node() {
    let _one = exclusive();
    let cluster = nodes_only();
    let leader = cluster.wait_for_leader(SETTLE);
    let follower = a_follower(&cluster, leader);
    let text = "NoteRaft ✓\nline two, no newline at the end";
    let answer = put(&cluster, follower, text.as_bytes());
    assert_eq!(answer.code, 200, "{answer:?}");
    let index: u64 = answer
        .header("X-Raftlb-Index")
        .and_then(|v| v.parse().ok())
        .expect("a write names its log index");
    assert_eq!(answer.body.trim(), format!("saved at index {index}"));
    // Right after the write returned, every node must see it: no waiting.
    for i in 0..5 {
        let got = read(&cluster, i);
        assert_eq!((got.code, got.body.as_str()), (200, text), "node {i}");
    }
    // The original page's form post, on another node.
    let other = (0..5).find(|i| *i != follower).expect("five nodes");
    let form = b"textareaData=from+the+form+%E2%9C%93%0A";
    let answer = request(
        "POST",
        &cluster.url(other, "/note"),
        "application/x-www-form-urlencoded",
        form,
    )
    .expect("answers");
    assert_eq!(answer.code, 200, "{answer:?}");
    for i in 0..5 {
        assert_eq!(read(&cluster, i).body, "from the form ✓\n", "node {i}");
    }
    // A browser's textarea line breaks come as CRLF; the note keeps "\n".
    let crlf = b"textareaData=line+1%0D%0Aline+2";
    let answer = request(
        "POST",
        &cluster.url(other, "/note"),
        "application/x-www-form-urlencoded",
        crlf,
    )
    .expect("answers");
    assert_eq!(answer.code, 200, "{answer:?}");
    assert_eq!(read(&cluster, other).body, "line 1\nline 2");
    // A browser's form submission (it asks for HTML) is sent back to the page.
    let port = cluster.ports[other];
    let head = format!(
        "POST /note HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Origin: http://127.0.0.1:{port}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\n\
         Accept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"
    );
    let (status, answer) = raw(&cluster, other, &head, b"textareaData=from+a+browser");
    assert_eq!(status, 303, "{answer}");
    assert!(answer.contains("\r\nLocation: /\r\n"), "{answer}");
    assert!(answer.contains("X-Raftlb-Index: "), "{answer}");
    assert_eq!(read(&cluster, follower).body, "from a browser");

    // The page, without JavaScript: the note as the node applied it (escaped),
    // this node's view, and a form that posts the seed's field back to /note.
    let markup = "</textarea><script>alert('x')</script> & \"q\"";
    assert_eq!(put(&cluster, follower, markup.as_bytes()).code, 200);
    let page = request("GET", &cluster.url(follower, "/"), "text/html", b"")
        .expect("the page")
        .body;
    let escaped =
        "&lt;/textarea&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;";
    assert!(page.contains(&format!("name=\"textareaData\" spellcheck=\"false\" aria-describedby=\"note-count note-help\">\n{escaped}</textarea>")), "{page}");
    assert!(!page.contains("<script>alert"), "the note is not markup");
    assert!(page.contains("<form id=\"note-form\" method=\"post\" action=\"/note\">"));
    let me = &cluster.ids[follower];
    assert!(page.contains(&format!("<title>NoteRaft — raftlb node {me}</title>")));
    let leader_id = &cluster.ids[leader];
    assert!(
        page.contains(&format!("<dd id=\"leader\">{leader_id}</dd>")),
        "{page}"
    );
    assert!(page.contains("<dd id=\"role\">follower</dd>"), "{page}");
    assert!(!page.contains("{{"), "every placeholder filled");
    let empty = put(&cluster, leader, b"");
    assert_eq!(empty.code, 200);
    assert_eq!(read(&cluster, follower).body, "");
}

#[test]
fn bad_note_requests_get_their_4xx_with_a_reason() {
    let _one = exclusive();
    let cluster = nodes_only();
    let url = cluster.url(0, "/note");
    let biggest = vec![b'x'; 32768];
    assert_eq!(put(&cluster, 0, &biggest).code, 200, "exactly 32 KiB fits");
    let too_big = put(&cluster, 0, &vec![b'x'; 32769]);
    assert_eq!(too_big.code, 413);
    assert!(too_big.body.contains("32768"), "{too_big:?}");
    let not_utf8 = put(&cluster, 1, b"ok \xff\xfe");
    assert_eq!(not_utf8.code, 400);
    assert!(not_utf8.body.contains("UTF-8"), "{not_utf8:?}");
    let form = |body: &[u8]| {
        request("POST", &url, "application/x-www-form-urlencoded", body).expect("answers")
    };
    let no_field = form(b"note=hello");
    assert_eq!(no_field.code, 400);
    assert!(no_field.body.contains("textareaData"), "{no_field:?}");
    assert_eq!(form(b"textareaData=%zz").code, 400);
    let encoded_too_big = format!("textareaData={}", "%41".repeat(32769));
    assert_eq!(form(encoded_too_big.as_bytes()).code, 413);
    let delete = request("DELETE", &url, "text/plain", b"").expect("answers");
    assert_eq!(delete.code, 405);
    assert_eq!(delete.header("Allow"), Some("GET, PUT, POST"));
    for answer in [too_big, not_utf8, no_field, delete] {
        assert_eq!(answer.body.trim_end().lines().count(), 1, "{answer:?}");
    }
    // None of it changed the note.
    assert_eq!(read(&cluster, 2).body.len(), 32768);
    // The client refuses a note over 32 KiB before sending it (exit 2).
    let out = Command::new(CLIENT)
        .args([
            "--nodes",
            &cluster.nodes_file(),
            "note",
            "set",
            &"é".repeat(16385),
        ])
        .output()
        .expect("run raftlb");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("32768"));
}

/// Sends `head` (and `body`) on a connection of its own to node `i`; returns
/// the status and the whole answer as text.
fn raw(cluster: &Cluster, i: usize, head: &str, body: &[u8]) -> (u16, String) {
    let mut stream =
        TcpStream::connect(("127.0.0.1", cluster.ports[i])).expect("connect to the node");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    let mut bytes = format!(
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).expect("send the request");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
}

#[test]
fn cross_site_note_writes_are_403_a_foreign_host_421_and_both_counted() {
    let _one = exclusive();
    let cluster = nodes_only();
    let port = cluster.ports[0];
    let own = format!("127.0.0.1:{port}");
    let other_node = format!("http://127.0.0.1:{}", cluster.ports[1]);
    let form = b"textareaData=pwned";
    let cross_site = [
        format!("POST /note HTTP/1.1\r\nHost: {own}\r\nOrigin: http://evil.example"),
        format!("PUT /note HTTP/1.1\r\nHost: {own}\r\nSec-Fetch-Site: cross-site"),
    ];
    for head in &cross_site {
        let (status, answer) = raw(&cluster, 0, head, form);
        assert_eq!(status, 403, "{answer}");
    }
    let rebound = format!("GET /note HTTP/1.1\r\nHost: evil.example:{port}");
    let (status, answer) = raw(&cluster, 0, &rebound, b"");
    assert_eq!(status, 421, "{answer}");
    let (status, answer) = raw(&cluster, 0, "GET /health HTTP/1.1", b"");
    assert_eq!(status, 400, "no Host in HTTP/1.1: {answer}");
    // The node's own page, and another node's page failing over, may write.
    for origin in [format!("http://{own}"), other_node.clone()] {
        let head = format!("PUT /note HTTP/1.1\r\nHost: {own}\r\nOrigin: {origin}");
        let (status, answer) = raw(&cluster, 0, &head, b"mine");
        assert_eq!(status, 200, "{answer}");
    }
    // Another node's page may read the answer (CORS); any other site may not.
    let head = format!("GET /note HTTP/1.1\r\nHost: {own}\r\nOrigin: {other_node}");
    let (status, answer) = raw(&cluster, 0, &head, b"");
    assert_eq!(status, 200, "{answer}");
    let allowed = format!("\r\nAccess-Control-Allow-Origin: {other_node}\r\n");
    assert!(answer.contains(&allowed), "{answer}");
    let head = format!("GET /note HTTP/1.1\r\nHost: {own}\r\nOrigin: http://evil.example");
    let (status, answer) = raw(&cluster, 0, &head, b"");
    assert_eq!(status, 200, "{answer}");
    assert!(!answer.contains("Access-Control-Allow-Origin"), "{answer}");
    assert_eq!(
        read(&cluster, 1).body,
        "mine",
        "no refused write took effect"
    );
    let huge =
        format!("GET /health HTTP/1.1\r\nHost: {own}\r\nContent-Length: 4611686018427387904");
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .write_all(format!("{huge}\r\n\r\n").as_bytes())
        .expect("send");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let metrics = request("GET", &cluster.url(0, "/metrics"), "text/plain", b"")
        .expect("metrics answer")
        .body;
    for line in [
        "raftlb_http_responses_total{code=\"403\"} 2",
        "raftlb_http_responses_total{code=\"421\"} 1",
        "raftlb_http_responses_total{code=\"413\"} 1",
        "raftlb_http_too_large_total{part=\"body\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
}

#[test]
fn without_a_quorum_note_writes_and_reads_answer_503_in_time_then_recover() {
    let _one = exclusive();
    let mut cluster = nodes_only();
    assert_eq!(put(&cluster, 0, b"before").code, 200);
    for i in [2, 3, 4] {
        cluster.kill_node(i);
    }
    let start = Instant::now();
    let write = put(&cluster, 0, b"no quorum");
    let write_took = start.elapsed();
    let start = Instant::now();
    let read_answer = read(&cluster, 1);
    let read_took = start.elapsed();
    for (answer, took) in [(&write, write_took), (&read_answer, read_took)] {
        assert_eq!(answer.code, 503, "{answer:?}");
        assert!(took < Duration::from_secs(5), "answered after {took:?}");
        assert_eq!(answer.body.trim_end().lines().count(), 1, "{answer:?}");
    }
    assert!(write.body.contains("may or may not"), "{write:?}");
    for i in [2, 3, 4] {
        cluster.restart_node(i);
    }
    cluster.wait_for_leader(SETTLE);
    assert_eq!(put(&cluster, 3, b"after").code, 200);
    assert_eq!(read(&cluster, 0).body, "after");
}

#[test]
fn a_write_sent_to_a_follower_just_after_the_leader_died_is_saved() {
    let _one = exclusive();
    let mut cluster = nodes_only();
    let leader = cluster.wait_for_leader(SETTLE);
    let follower = a_follower(&cluster, leader);
    cluster.kill_node(leader);
    // The follower still believes in the dead leader and forwards there; once a
    // new leader commits, the write certainly did not happen and is sent again.
    let answer = put(&cluster, follower, b"survived the leader");
    assert_eq!(answer.code, 200, "{answer:?}");
    for i in cluster.live() {
        assert_eq!(read(&cluster, i).body, "survived the leader", "node {i}");
    }
}

#[test]
fn the_note_survives_log_compaction_a_lagging_node_and_a_whole_cluster_restart() {
    let _one = exclusive();
    let mut cluster = nodes_only();
    let leader = cluster.wait_for_leader(SETTLE);
    let lagging = a_follower(&cluster, leader);
    cluster.kill_node(lagging);
    // More writes than SNAPSHOT_ENTRIES, from 8 threads.
    let writers = 8;
    let per_writer = 150;
    std::thread::scope(|scope| {
        for w in 0..writers {
            let cluster = &cluster;
            scope.spawn(move || {
                for k in 0..per_writer {
                    let node = cluster.live()[(w + k) % cluster.live().len()];
                    let text = format!("writer {w} note {k}");
                    let answer = put(cluster, node, text.as_bytes());
                    assert_eq!(answer.code, 200, "{answer:?}");
                }
            });
        }
    });
    let last = put(&cluster, leader, b"the last word");
    assert_eq!(last.code, 200);
    cluster.restart_node(lagging);
    // The lagging node's log is behind the leader's snapshot: it catches up
    // from the snapshot, and its linearizable read sees the last write.
    wait_for("the lagging node to answer the last note", SETTLE, || {
        let got = request("GET", &cluster.url(lagging, "/note"), "text/plain", b"")?;
        (got.code == 200 && got.body == "the last word").then_some(())
    });
    let logs = cluster.logs();
    assert!(
        logs.contains("installed a snapshot"),
        "the lagging node caught up without a snapshot"
    );
    for i in 0..5 {
        cluster.kill_node(i);
    }
    for i in 0..5 {
        cluster.restart_node(i);
    }
    cluster.wait_for_leader(SETTLE);
    for i in 0..5 {
        let got = read(&cluster, i);
        assert_eq!(
            (got.code, got.body.as_str()),
            (200, "the last word"),
            "node {i}"
        );
    }
}

#[test]
fn raftlb_note_set_and_get_fail_over_past_a_dead_first_node() {
    let _one = exclusive();
    let mut cluster = nodes_only();
    cluster.kill_node(0);
    cluster.wait_for_leader(SETTLE);
    let nodes = cluster.nodes_file();
    let client = |args: &[&str], stdin: Option<&str>| {
        let mut child = Command::new(CLIENT)
            .args(["--nodes", &nodes, "note"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run raftlb");
        let mut pipe = child.stdin.take().expect("piped");
        pipe.write_all(stdin.unwrap_or("").as_bytes())
            .expect("write stdin");
        drop(pipe);
        child.wait_with_output().expect("raftlb ends")
    };
    let set = client(&["set", "via the client"], None);
    assert!(set.status.success(), "{set:?}");
    let said = String::from_utf8_lossy(&set.stdout);
    assert!(said.starts_with("saved at index "), "{said}");
    let got = client(&["get"], None);
    assert!(got.status.success(), "{got:?}");
    assert_eq!(
        got.stdout, b"via the client",
        "exact bytes, no added newline"
    );
    let from_stdin = client(&["set", "-"], Some("from stdin\n"));
    assert!(from_stdin.status.success(), "{from_stdin:?}");
    assert_eq!(client(&["get"], None).stdout, b"from stdin\n");
    // Every node down: exit 1, a line per node.
    for i in 1..5 {
        cluster.kill_node(i);
    }
    let failed = client(&["get"], None);
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("every node failed"), "{stderr}");
}

#[test]
fn prime_requests_keep_being_served_while_note_requests_wait_without_a_quorum() {
    let _one = exclusive();
    let mut cluster = Cluster::start(Options::default());
    cluster.wait_for_leader(SETTLE);
    cluster.wait_for_servers(&[true; 3], SETTLE);
    for i in [2, 3, 4] {
        cluster.kill_node(i);
    }
    // More note writes than may wait at once (64): each waits the full 3 s for a
    // quorum that is not there, the ones beyond are turned away at once.
    let writers = 80;
    std::thread::scope(|scope| {
        let notes: Vec<_> = (0..writers)
            .map(|w| {
                let cluster = &cluster;
                scope.spawn(move || put(cluster, 0, format!("pile-up {w}").as_bytes()))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        // Meanwhile a prime request on the same node is answered at once, from
        // its applied load table (no leader needed).
        let start = Instant::now();
        let prime = request("GET", &cluster.url(0, "/10000"), "text/plain", b"")
            .expect("node 0 answers a prime request");
        let took = start.elapsed();
        assert_eq!((prime.code, prime.body.trim()), (200, "104729"));
        // Were note requests waiting on the handler threads, it would wait
        // ~2.7 s, for a thread that a note request frees at its 3 s deadline.
        assert!(took < Duration::from_secs(2), "the prime waited {took:?}");
        let answers: Vec<support::Answer> = notes
            .into_iter()
            .map(|h| h.join().expect("writer thread"))
            .collect();
        assert!(answers.iter().all(|a| a.code == 503), "no quorum, no 200");
        let turned_away = answers
            .iter()
            .filter(|a| a.body.contains("too many note requests"))
            .count();
        assert!(turned_away > 0, "every write held a thread");
    });
}

#[test]
fn large_notes_are_compacted_by_size_so_the_data_dirs_stay_small() {
    let _one = exclusive();
    let cluster = nodes_only();
    // 320 notes of 32 KiB: 10 MiB of log, far fewer than the SNAPSHOT_ENTRIES that
    // trigger a snapshot by count; the 2 MiB size threshold must.
    let big = |k: usize| format!("{k:>8}{}", "z".repeat(32768 - 8));
    std::thread::scope(|scope| {
        for w in 0..4 {
            let cluster = &cluster;
            scope.spawn(move || {
                for k in 0..80 {
                    let answer = put(cluster, (w + k) % 5, big(w * 1000 + k).as_bytes());
                    assert_eq!(answer.code, 200, "{answer:?}");
                }
            });
        }
    });
    let last = big(99_999);
    assert_eq!(put(&cluster, 0, last.as_bytes()).code, 200);
    wait_for("every node to compact", SETTLE, || {
        let sizes: Vec<u64> = cluster
            .ids
            .iter()
            .map(|id| dir_bytes(&cluster, id))
            .collect();
        sizes.iter().all(|s| *s < 6 * 1024 * 1024).then_some(())
    });
    for i in 0..5 {
        assert_eq!(read(&cluster, i).body, last, "node {i}");
    }
}

fn dir_bytes(cluster: &Cluster, id: &str) -> u64 {
    std::fs::read_dir(cluster.path(&format!("data-{id}")))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(u64::MAX)
}

/// 64 closed-loop writers on keep-alive connections, as many as may wait at
/// once, are never turned away: each sends its next write the moment the last
/// answer arrives, which must find its place already free.
#[test]
fn sixty_four_writers_in_a_closed_loop_are_never_turned_away() {
    let _one = exclusive();
    let cluster = nodes_only();
    let leader = cluster.wait_for_leader(SETTLE);
    let output = Command::new(CLIENT)
        .args(["bench", "note", "--target", &cluster.url(leader, "")])
        .args([
            "-c",
            "64",
            "--max-requests",
            "3000",
            "--duration-secs",
            "60",
        ])
        .args(["--warmup-secs", "0", "--json"])
        .output()
        .expect("run raftlb bench note");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout} {}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(json["failed"], 0, "{json}");
    assert!(json["ok"].as_u64().is_some_and(|ok| ok >= 3000), "{json}");
}
