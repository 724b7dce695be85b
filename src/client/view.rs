//! `raftlb status`: every node's `/status`, fetched in parallel, shown as two
//! aligned tables: the nodes as each sees itself, and the servers' load table.
//!
//! The servers table comes from the leader (it applies first), else from any
//! node that answered: each node holds a copy of the same agreed table. With
//! several nodes claiming leadership (a partition heals), the highest term wins.
//!
//! The last line says what a person needs to know before anything else: the
//! leader, its term and how many nodes are up, or `NO LEADER` with how many
//! are up and how many a majority needs ([`summary`]).

use std::fmt::Write as _;

use super::failover::{self, FailoverError};
use super::http::{self, Timeouts};
use super::member::Member;
use crate::nodes::NodeEntry;
use crate::status::{ServerStatus, Status};

/// What one node answered.
#[derive(Clone, Debug)]
pub struct NodeView {
    pub id: String,
    pub addr: String,
    /// Its status, or why there is none (down, bad answer).
    pub status: Result<Status, String>,
}

/// Asks every node at once; a node that does not answer within `timeouts`
/// is down. One thread per node (at most `nodes::MAX_NODES`).
pub fn fetch(nodes: &[NodeEntry], timeouts: Timeouts) -> Vec<NodeView> {
    let agent = http::agent(timeouts, false);
    std::thread::scope(|scope| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|node| {
                let agent = &agent;
                scope.spawn(move || fetch_one(agent, node))
            })
            .collect();
        handles
            .into_iter()
            .zip(nodes)
            .map(|(handle, node)| NodeView {
                id: node.id.clone(),
                addr: node.addr.clone(),
                status: handle
                    .join()
                    .unwrap_or_else(|_| Err("status thread panicked".to_string())),
            })
            .collect()
    })
}

/// Like [`fetch`], then asks the members that nodes.txt lacks too: those of
/// the configuration in the leader's `/status` (else the first answer's), so
/// that a node added by `raftlb member add` shows in the table. nodes.txt's
/// nodes come first, in its order, all of them (see `member::merge_members`).
pub fn fetch_with_members(nodes: &[NodeEntry], timeouts: Timeouts) -> Vec<NodeView> {
    let mut views = fetch(nodes, timeouts);
    let Some((_, status)) = servers_source(&views) else {
        return views;
    };
    let members: Vec<Member> = (status.nodes.iter())
        .map(|n| Member {
            id: n.id.clone(),
            addr: n.addr.clone(),
            voter: true,
        })
        .collect();
    let merged = super::member::merge_members(nodes, &members);
    for skipped in &merged.skipped {
        log::debug!("status: {skipped}");
    }
    views.extend(fetch(&merged.entries[nodes.len()..], timeouts));
    views
}

fn fetch_one(agent: &ureq::Agent, node: &NodeEntry) -> Result<Status, String> {
    let reply = http::get(agent, &format!("{}/status", http::node_base_url(node)))
        .map_err(|e| e.to_string())?;
    if reply.status != 200 {
        let line = failover::first_line(&reply.body);
        return Err(format!("answered {}: {line}", reply.status));
    }
    serde_json::from_str(&reply.body).map_err(|e| format!("bad /status JSON: {e}"))
}

/// The raw `/status` body of the first node (in nodes.txt order) that answers.
pub fn raw_json(nodes: &[NodeEntry], timeouts: Timeouts) -> Result<String, FailoverError> {
    failover::first_body(nodes, timeouts, "/status")
}

/// The node whose servers table to show: the leader with the highest term,
/// else the first that answered.
pub(crate) fn servers_source(views: &[NodeView]) -> Option<(&NodeView, &Status)> {
    leader(views).or_else(|| {
        views
            .iter()
            .find_map(|v| v.status.as_ref().ok().map(|s| (v, s)))
    })
}

/// The leader as the nodes that answered see it: the node with the highest
/// term that says it leads. None while there is none (an election, or too few
/// nodes up).
pub fn leader(views: &[NodeView]) -> Option<(&NodeView, &Status)> {
    views
        .iter()
        .filter_map(|v| v.status.as_ref().ok().map(|s| (v, s)))
        .filter(|(_, s)| s.role == "leader")
        .max_by_key(|(_, s)| s.term)
}

/// The last line of `raftlb status`: "leader C, term 7, 5 of 5 nodes up", or
/// "NO LEADER: …" saying how many are up and how many a majority needs. What
/// counts is the voters of the configuration (see `voters` below): a learner,
/// or a node of nodes.txt that was removed, is not part of a majority. When
/// they are not exactly the table's rows, the line says "voters" for "nodes".
pub fn summary(views: &[NodeView]) -> String {
    let voters = voters(views);
    let total = voters.len();
    let up = voters.iter().filter(|(_, up)| *up).count();
    let majority = total / 2 + 1;
    let same_as_rows =
        total == views.len() && (views.iter()).all(|v| voters.iter().any(|(id, _)| *id == v.id));
    let what = if same_as_rows { "nodes" } else { "voters" };
    if let Some((node, status)) = leader(views) {
        return format!(
            "leader {}, term {}, {up} of {total} {what} up",
            node.id, status.term
        );
    }
    let fail = "writes and linearizable reads will fail";
    if up >= majority {
        return format!(
            "NO LEADER: {up} of {total} {what} up, a majority is {majority}; \
             an election should end within a second; {fail} until then"
        );
    }
    let missing = match majority - up {
        1 => "one more is back".to_string(),
        n => format!("{n} more are back"),
    };
    format!(
        "NO LEADER: {up} of {total} {what} up, a majority is {majority}; {fail} until {missing}"
    )
}

/// The nodes that vote, each with whether it answered: the voters of the
/// configuration in the status the servers table comes from (the leader's,
/// else the first answer's), whether or not nodes.txt lists them; every row
/// when no node answered (all of them down: the client's nodes list is all
/// there is to count).
fn voters(views: &[NodeView]) -> Vec<(&str, bool)> {
    let answered = |id: &str| views.iter().any(|v| v.id == id && v.status.is_ok());
    match servers_source(views) {
        Some((_, status)) if status.nodes.iter().any(|n| n.voter) => (status.nodes.iter())
            .filter(|n| n.voter)
            .map(|n| (n.id.as_str(), answered(&n.id)))
            .collect(),
        _ => (views.iter())
            .map(|v| (v.id.as_str(), v.status.is_ok()))
            .collect(),
    }
}

/// Both tables and the summary line, ready to print.
pub fn render(views: &[NodeView]) -> String {
    let mut out = String::new();
    let mut rows = vec![row(&[
        "", "ID", "ADDRESS", "STATE", "ROLE", "TERM", "LEADER", "COMMIT", "ERROR",
    ])];
    for view in views {
        rows.push(match &view.status {
            Ok(s) => {
                let mark = if s.role == "leader" { "*" } else { "" };
                let leader = s.leader.as_deref().unwrap_or("-");
                let (term, commit) = (s.term.to_string(), s.commit_index.to_string());
                row(&[
                    mark, &view.id, &view.addr, "up", &s.role, &term, leader, &commit, "",
                ])
            }
            Err(reason) => row(&["", &view.id, &view.addr, "down", "-", "-", "-", "-", reason]),
        });
    }
    out.push_str(&aligned(&rows));
    out.push('\n');
    match servers_source(views) {
        None => out.push_str("servers: unknown, no node answered\n"),
        Some((source, status)) => {
            let _ = writeln!(
                out,
                "servers, as node {} ({}) sees them:",
                source.id, status.role
            );
            out.push_str(&servers_table(&status.servers));
        }
    }
    let _ = writeln!(out, "\n{}", summary(views));
    out
}

fn servers_table(servers: &[ServerStatus]) -> String {
    if servers.is_empty() {
        return "no server has reported\n".to_string();
    }
    let mut rows = vec![row(&["ID", "URL", "CPU%", "WAIT%", "ALIVE", "AGE"])];
    for s in servers {
        let (cpu, wait) = (format!("{:.1}", s.cpu), format!("{:.1}", s.wait));
        let alive = if s.alive { "yes" } else { "no" };
        rows.push(row(&[
            &s.id,
            &s.url,
            &cpu,
            &wait,
            alive,
            &format_age(s.age_ms),
        ]));
    }
    aligned(&rows)
}

pub(crate) fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Left-aligned columns two spaces apart, trailing blanks trimmed.
pub(crate) fn aligned(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (cell, width) in r.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `850ms`, `2.4s`, `3m05s`: readable at a glance, exact enough to spot a
/// server whose reports stopped.
pub(crate) fn format_age(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        1000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::NodeStatus;

    fn status(id: &str, role: &str, term: u64, leader: Option<&str>) -> Status {
        Status {
            id: id.into(),
            role: role.into(),
            term,
            leader: leader.map(Into::into),
            commit_index: 40 + term,
            applied_index: 40 + term,
            insecure: false,
            nodes: vec![NodeStatus {
                id: id.into(),
                addr: "h:1".into(),
                reachable: Some(true),
                voter: true,
            }],
            servers: vec![ServerStatus {
                id: format!("w-{id}"),
                url: "http://127.0.0.1:13337".into(),
                cpu: 12.345,
                wait: 0.0,
                alive: true,
                age_ms: 420,
            }],
        }
    }

    fn view(id: &str, status: Result<Status, String>) -> NodeView {
        NodeView {
            id: id.into(),
            addr: format!("localhost:{}", id.len()),
            status,
        }
    }

    #[test]
    fn the_leader_is_marked_and_its_servers_are_shown() {
        let views = [
            view("A", Err("connection refused".into())),
            view("B", Ok(status("B", "follower", 3, Some("C")))),
            view("C", Ok(status("C", "leader", 3, Some("C")))),
        ];
        let text = render(&views);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("   ID  ADDRESS"), "{text}");
        assert!(
            lines[1].contains("down") && lines[1].ends_with("connection refused"),
            "{text}"
        );
        assert!(lines[3].starts_with("*  C"), "{text}");
        assert!(
            text.contains("servers, as node C (leader) sees them:"),
            "{text}"
        );
        assert!(
            text.contains("w-C") && text.contains("12.3") && text.contains("420ms"),
            "{text}"
        );
    }

    #[test]
    fn without_a_leader_any_answer_gives_the_servers_and_stale_leaders_lose() {
        let views = [
            view("A", Err("timed out".into())),
            view("B", Ok(status("B", "candidate", 5, None))),
        ];
        assert_eq!(
            servers_source(&views).map(|(v, _)| v.id.as_str()),
            Some("B")
        );
        let views = [
            view("A", Ok(status("A", "leader", 2, Some("A")))),
            view("B", Ok(status("B", "leader", 4, Some("B")))),
        ];
        assert_eq!(
            servers_source(&views).map(|(v, _)| v.id.as_str()),
            Some("B")
        );
        let views = [view("A", Err("timed out".into()))];
        assert!(render(&views).contains("servers: unknown, no node answered"));
    }

    /// `status` holding the configuration `members` (id, voter).
    fn with_members(mut status: Status, members: &[(&str, bool)]) -> Status {
        status.nodes = (members.iter())
            .map(|&(id, voter)| NodeStatus {
                id: id.into(),
                addr: format!("h:{}", id.len()),
                reachable: None,
                voter,
            })
            .collect();
        status
    }

    /// `status` in a configuration of five voters, A to E.
    fn five(status: Status) -> Status {
        with_members(
            status,
            &[
                ("A", true),
                ("B", true),
                ("C", true),
                ("D", true),
                ("E", true),
            ],
        )
    }

    #[test]
    fn the_last_line_names_the_leader_or_says_there_is_none_and_why() {
        let down = |id| view(id, Err("connection refused (os error 111)".into()));
        let mut views = vec![
            view("A", Ok(five(status("A", "follower", 7, Some("C"))))),
            view("B", Ok(five(status("B", "follower", 7, Some("C"))))),
            view("C", Ok(five(status("C", "leader", 7, Some("C"))))),
            view("D", Ok(five(status("D", "follower", 7, Some("C"))))),
            view("E", Ok(five(status("E", "follower", 7, Some("C"))))),
        ];
        assert_eq!(summary(&views), "leader C, term 7, 5 of 5 nodes up");
        assert!(render(&views).ends_with("\nleader C, term 7, 5 of 5 nodes up\n"));
        views[2] = down("C");
        views[3] = view("D", Ok(five(status("D", "candidate", 8, None))));
        assert_eq!(
            summary(&views),
            "NO LEADER: 4 of 5 nodes up, a majority is 3; an election should end within \
             a second; writes and linearizable reads will fail until then"
        );
        views[0] = down("A");
        views[1] = down("B");
        assert_eq!(
            summary(&views),
            "NO LEADER: 2 of 5 nodes up, a majority is 3; writes and linearizable reads \
             will fail until one more is back"
        );
        views[3] = down("D");
        assert!(summary(&views).ends_with("until 2 more are back"));
        let text = render(&views);
        assert!(
            text.lines().next().is_some_and(|l| l.ends_with("ERROR")),
            "{text}"
        );
        assert!(!text.contains("NOTE"), "{text}");
    }

    #[test]
    fn a_majority_counts_the_configurations_voters_not_the_tables_rows() {
        // nodes.txt still lists D and E, removed from the cluster (down for
        // good), and the configuration has a learner F that nodes.txt lacks:
        // the majority is of A, B and C. Counting rows said "2 of 6 nodes up,
        // a majority is 4 ... until 2 more are back" when one more is enough.
        let config = [("A", true), ("B", true), ("C", true), ("F", false)];
        let follower = |id| {
            view(
                id,
                Ok(with_members(status(id, "follower", 9, None), &config)),
            )
        };
        let down = |id| view(id, Err("connection refused".into()));
        let mut views = vec![
            follower("A"),
            down("B"),
            down("C"),
            down("D"),
            down("E"),
            follower("F"),
        ];
        assert_eq!(
            summary(&views),
            "NO LEADER: 1 of 3 voters up, a majority is 2; writes and linearizable reads \
             will fail until one more is back"
        );
        views[1] = view(
            "B",
            Ok(with_members(status("B", "leader", 9, Some("B")), &config)),
        );
        assert_eq!(summary(&views), "leader B, term 9, 2 of 3 voters up");
        // Before any node answers, the rows are all there is to count.
        let all_down: Vec<NodeView> = ["A", "B", "C"].into_iter().map(down).collect();
        assert!(summary(&all_down).starts_with("NO LEADER: 0 of 3 nodes up, a majority is 2;"));
    }

    #[test]
    fn ages_read_well() {
        assert_eq!(format_age(0), "0ms");
        assert_eq!(format_age(2_449), "2.4s");
        assert_eq!(format_age(185_000), "3m05s");
    }
}
