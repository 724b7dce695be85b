//! Process tests of `raftlb member`: the real binary against fake nodes
//! (`support::FakeHttp`, answering every path with one status and body) and
//! addresses where nothing listens.
//!
//! They prove that `member list` prints each member's id, address and voter or
//! learner with the leader marked; that `member add` signs its JSON body with
//! the cluster key and sends it once, to the leader a node's `/status` names,
//! printing the answer; that a 409 is exit 1 saying a change is pending, a 503
//! exit 1 saying the change may have happened, and no reachable node exit 1
//! saying nothing was sent; and that bad arguments are exit 2 before any
//! request.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Output};

use support::{FakeHttp, Recorded};

/// A loopback address where nothing listens: bound, then released.
fn refusing_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// A nodes.txt listing `addrs` as A, B, C… with a cluster key beside it.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(addrs: &[SocketAddr]) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let text: String = (addrs.iter().zip('A'..))
            .map(|(addr, id)| format!("{id} {addr}\n"))
            .collect();
        std::fs::write(dir.path().join("nodes.txt"), text).expect("write nodes.txt");
        raftlb::auth::keygen(&dir.path().join("cluster.key")).expect("keygen");
        Setup { dir }
    }

    fn nodes_file(&self) -> PathBuf {
        self.dir.path().join("nodes.txt")
    }

    fn raftlb(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_raftlb"))
            .arg("--nodes")
            .arg(self.nodes_file())
            .args(args)
            .output()
            .expect("run raftlb")
    }

    fn verifies(&self, request: &Recorded) -> bool {
        let keys = raftlb::client::auth::load(None, &self.nodes_file()).expect("the key");
        raftlb::auth::Auth::Keyed(keys)
            .verify_body(request.auth.as_deref(), &request.body)
            .is_ok()
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A `/status` body as a node with membership changes answers it.
fn status(id: &str, role: &str, leader: &str, members: &[(&str, SocketAddr, bool)]) -> String {
    let nodes: Vec<serde_json::Value> = (members.iter())
        .map(|(id, addr, voter)| {
            serde_json::json!({ "id": id, "addr": addr.to_string(), "voter": voter })
        })
        .collect();
    serde_json::json!({
        "id": id, "role": role, "term": 7, "leader": leader, "commit_index": 40,
        "applied_index": 40, "insecure": false, "nodes": nodes, "servers": []
    })
    .to_string()
}

fn member_posts(node: &FakeHttp) -> Vec<Recorded> {
    (node.requests().into_iter())
        .filter(|r| r.url == "/admin/member")
        .collect()
}

#[test]
fn member_list_prints_ids_addresses_voters_and_learners_with_the_leader_marked() {
    let (a, c, f) = (refusing_addr(), refusing_addr(), refusing_addr());
    let follower = FakeHttp::start(
        200,
        &status(
            "B",
            "follower",
            "C",
            &[("A", a, true), ("C", c, true), ("F", f, false)],
        ),
    );
    let setup = Setup::new(&[a, follower.addr]);
    let output = setup.raftlb(&["member", "list"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = stdout(&output);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["ID", "ADDRESS", "MEMBER"], "{out}");
    assert_eq!(rows[1], ["A", &a.to_string(), "voter"], "{out}");
    assert_eq!(rows[2], ["*", "C", &c.to_string(), "voter"], "{out}");
    assert_eq!(rows[3], ["F", &f.to_string(), "learner"], "{out}");
    assert!(out.contains("leader C (as node B sees it)"), "{out}");

    let nobody = Setup::new(&[refusing_addr()]);
    let output = nobody.raftlb(&["member", "list"]);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(
        stderr(&output).ends_with("member list: no node answered\n"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn member_add_sends_one_signed_change_to_the_leader_and_prints_its_answer() {
    let (a, f) = (refusing_addr(), refusing_addr());
    let members = |extra: bool| {
        let mut m = vec![("A", a, true)];
        if extra {
            m.push(("F", f, false));
        }
        m
    };
    let follower = FakeHttp::start(200, &status("B", "follower", "C", &members(false)));
    let leader_body = status("C", "leader", "C", &members(true));
    let leader = FakeHttp::start(200, &leader_body);
    let setup = Setup::new(&[a, follower.addr, leader.addr]);
    let f_addr = f.to_string();
    let output = setup.raftlb(&["member", "add", "F", &f_addr]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), format!("{leader_body}\n"));
    assert!(
        member_posts(&follower).is_empty(),
        "sent to the leader only"
    );
    let posts = member_posts(&leader);
    assert_eq!(posts.len(), 1, "sent once");
    assert!(setup.verifies(&posts[0]), "signed with the cluster key");
    let body: serde_json::Value = serde_json::from_slice(&posts[0].body).expect("JSON");
    assert_eq!(
        (&body["op"], &body["id"], &body["addr"]),
        (&"add".into(), &"F".into(), &f_addr.clone().into())
    );
    assert!(body["at"].as_u64().is_some_and(|at| at > 1_600_000_000_000));
    assert_eq!(body.as_object().map(|o| o.len()), Some(4), "{body}");
}

#[test]
fn a_pending_change_or_a_lost_verdict_is_exit_1_after_one_request() {
    let busy = FakeHttp::start(409, "adding F has not committed\n");
    let setup = Setup::new(&[busy.addr]);
    let output = setup.raftlb(&["member", "remove", "E"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output)
            .contains("another membership change is pending: adding F has not committed"),
        "{}",
        stderr(&output)
    );
    assert_eq!(member_posts(&busy).len(), 1);

    // A 503 from the first node is not a reason to try the second: the
    // change may commit later.
    let unsure = FakeHttp::start(503, "no leader\n");
    let spare = FakeHttp::start(200, "ok\n");
    let setup = Setup::new(&[refusing_addr(), unsure.addr, spare.addr]);
    let output = setup.raftlb(&["member", "replace", "E", "F", "127.0.0.1:9"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("may or may not have happened"),
        "{}",
        stderr(&output)
    );
    let posts = member_posts(&unsure);
    assert_eq!(posts.len(), 1);
    assert!(member_posts(&spare).is_empty(), "never resent");
    let body: serde_json::Value = serde_json::from_slice(&posts[0].body).expect("JSON");
    assert_eq!(
        (&body["op"], &body["old"]),
        (&"replace".into(), &"E".into())
    );

    let (one, two) = (
        TcpListener::bind("127.0.0.1:0"),
        TcpListener::bind("127.0.0.1:0"),
    );
    let addrs = [one, two].map(|l| l.and_then(|l| l.local_addr()).expect("bound"));
    let setup = Setup::new(&addrs);
    let output = setup.raftlb(&["member", "add", "F", "127.0.0.1:9"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("nothing was sent"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn status_shows_a_member_that_nodes_txt_lacks() {
    let (a, b) = (refusing_addr(), refusing_addr());
    let added = FakeHttp::start(200, &status("F", "follower", "B", &[("A", a, true)]));
    // B lists itself at an address of its own: nodes.txt's entry wins by id.
    let members = [("A", a, true), ("B", b, true), ("F", added.addr, false)];
    let leader = FakeHttp::start(200, &status("B", "leader", "B", &members));
    let setup = Setup::new(&[a, leader.addr]);
    let output = setup.raftlb(&["status"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = stdout(&output);
    let ids: Vec<&str> = (out.lines().skip(1))
        .take_while(|l| !l.is_empty())
        .map(|l| {
            l.trim_start_matches('*')
                .split_whitespace()
                .next()
                .unwrap_or("")
        })
        .collect();
    assert_eq!(ids, ["A", "B", "F"], "{out}");
    let f_row = out.lines().nth(3).unwrap_or("");
    assert!(
        f_row.contains(" up ") && f_row.contains("follower"),
        "{out}"
    );
    assert!(
        // F is a learner: the majority is of A (down) and B.
        out.ends_with("leader B, term 7, 1 of 2 voters up\n"),
        "{out}"
    );
}

#[test]
fn bad_member_arguments_exit_2_before_any_request() {
    let node = FakeHttp::start(200, "ok\n");
    let setup = Setup::new(&[node.addr]);
    for args in [
        &["member", "add", "a b", "127.0.0.1:9"][..],
        &["member", "add", "F", "localhost"],
        &["member", "add", "F", "localhost:0"],
        &["member", "add", "F", "localhost:65536"],
        &["member", "add", &"x".repeat(33), "localhost:9"],
        &["member", "remove", ""],
        &["member", "replace", "C", "C", "localhost:9"],
        &["member", "remove"],
        &["member", "frob"],
    ] {
        let output = setup.raftlb(args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    assert_eq!(node.count(), 0, "{:?}", node.paths());
    let output = setup.raftlb(&["member", "add", "--help"]);
    assert!(
        stdout(&output).contains("[default: 60000]"),
        "{}",
        stdout(&output)
    );
}
