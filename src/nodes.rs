//! nodes.txt: the cluster's bootstrap membership, and the address book a node
//! keeps of the members in force.
//!
//! One node per line, `ID HOST:PORT`; `#` starts a comment; blank lines are
//! ignored. The file is hostile until parsed: a duplicate id or address, a line
//! that does not parse, or an address that does not resolve is refused with the
//! file name and line number, so a typo never starts a half-configured cluster.
//!
//! A node's Raft id is derived from its name alone ([`node_id`]), so every node,
//! and a node added later with a nodes file of its own, derives the same id for
//! the same name without sending names over the wire. (Data dir format 1 used
//! the position in the file; `Nodes::legacy_name` maps those back.)

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

use crate::raft::NodeId;

/// Longest node id accepted: ids appear in headers, JSON and log lines.
pub(crate) const MAX_ID_BYTES: usize = 32;
/// Most nodes in one file; Raft clusters past a handful only get slower.
pub(crate) const MAX_NODES: usize = 64;
/// Largest nodes.txt read: a real one is a few hundred bytes.
pub const MAX_FILE_BYTES: u64 = 64 * 1024;

/// One line of nodes.txt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEntry {
    /// The name people use (`A`), also in `/status` and the client's table.
    pub id: String,
    /// The address exactly as written (`localhost:34572`), for display and URLs.
    pub addr: String,
    /// The resolved address: where the node binds its UDP and TCP port, and the
    /// only source address from which its datagrams are accepted.
    pub socket: SocketAddr,
}

/// The whole membership, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nodes {
    entries: Vec<NodeEntry>,
    /// `node_id` of each entry's name, in the same order.
    ids: Vec<NodeId>,
}

/// The Raft id of the node named `name`: the first 8 bytes of SHA-256 over a
/// fixed prefix and the name, in 1..2^62 (so never 0, and far from the small
/// numbers format 1 used). Two names of one cluster sharing an id are refused
/// where they meet (a nodes file, a configuration change).
pub fn node_id(name: &str) -> NodeId {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"raftlb node id\0")
        .chain_update(name.as_bytes())
        .finalize();
    let mut word = [0u8; 8];
    word.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(word) >> 2).max(1)
}

/// Why nodes.txt (or an id in it) was refused; `Display` is the one-line message.
#[derive(Debug, PartialEq, Eq)]
pub enum NodesError {
    /// The file could not be read at all.
    Read { file: String, reason: String },
    /// A line is wrong; `line` counts from 1.
    Line {
        file: String,
        line: usize,
        reason: String,
    },
    /// The file parsed but names no node.
    Empty { file: String },
    /// `--id` names a node that is not in the file.
    UnknownId { file: String, id: String },
}

impl fmt::Display for NodesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodesError::Read { file, reason } => write!(f, "cannot read {file}: {reason}"),
            NodesError::Line { file, line, reason } => write!(f, "{file} line {line}: {reason}"),
            NodesError::Empty { file } => write!(f, "{file}: no nodes listed"),
            NodesError::UnknownId { file, id } => write!(f, "node id {id:?} is not in {file}"),
        }
    }
}

impl std::error::Error for NodesError {}

impl Nodes {
    /// Reads and parses a nodes file.
    pub fn load(path: &Path) -> Result<Nodes, NodesError> {
        let file = path.display().to_string();
        let read_err = |reason: String| NodesError::Read {
            file: file.clone(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| read_err(e.to_string()))?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(read_err(format!("larger than {MAX_FILE_BYTES} bytes")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| read_err(e.to_string()))?;
        Nodes::parse(&text, &file)
    }

    /// Parses the text of a nodes file; `file` names it in error messages.
    pub fn parse(text: &str, file: &str) -> Result<Nodes, NodesError> {
        let mut entries: Vec<NodeEntry> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |reason: String| NodesError::Line {
                file: file.to_string(),
                line,
                reason,
            };
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let entry = parse_line(content).map_err(err)?;
            if entries.iter().any(|e| e.id == entry.id) {
                return Err(err(format!("duplicate id {}", entry.id)));
            }
            if let Some(other) = entries.iter().find(|e| e.socket == entry.socket) {
                return Err(err(format!(
                    "duplicate address {} (also node {})",
                    entry.addr, other.id
                )));
            }
            if entries.len() == MAX_NODES {
                return Err(err(format!("more than {MAX_NODES} nodes")));
            }
            entries.push(entry);
        }
        if entries.is_empty() {
            return Err(NodesError::Empty {
                file: file.to_string(),
            });
        }
        let nodes = Nodes::from_entries(entries);
        if let Some(i) = (1..nodes.ids.len()).find(|&i| nodes.ids[..i].contains(&nodes.ids[i])) {
            return Err(NodesError::Read {
                file: file.to_string(),
                reason: format!(
                    "node id {} hashes like another node's; rename it",
                    nodes.entries[i].id
                ),
            });
        }
        Ok(nodes)
    }

    /// A book of `entries` (already checked), ids derived from their names.
    pub(crate) fn from_entries(entries: Vec<NodeEntry>) -> Nodes {
        let ids = entries.iter().map(|e| node_id(&e.id)).collect();
        Nodes { entries, ids }
    }

    /// The name format 1's Raft id `id` (a position plus one) stood for.
    pub(crate) fn legacy_name(&self, id: NodeId) -> Option<&str> {
        let index = usize::try_from(id).ok()?.checked_sub(1)?;
        self.entries.get(index).map(|e| e.id.as_str())
    }

    /// All nodes in file order.
    pub fn entries(&self) -> &[NodeEntry] {
        &self.entries
    }

    /// The Raft id of the node named `id`, if it is listed.
    pub(crate) fn raft_id_of(&self, id: &str) -> Option<NodeId> {
        self.entries
            .iter()
            .zip(&self.ids)
            .find(|(e, _)| e.id == id)
            .map(|(_, &raft_id)| raft_id)
    }

    /// Like `Nodes::raft_id_of`, with the error `--id` wants.
    pub fn require(&self, id: &str, file: &str) -> Result<NodeId, NodesError> {
        self.raft_id_of(id).ok_or_else(|| NodesError::UnknownId {
            file: file.to_string(),
            id: id.to_string(),
        })
    }

    /// The entry of a Raft id.
    pub fn get(&self, raft_id: NodeId) -> Option<&NodeEntry> {
        let index = self.ids.iter().position(|&id| id == raft_id)?;
        self.entries.get(index)
    }

    /// The Raft id whose address is exactly `source` (IP and port), if any.
    pub(crate) fn raft_id_at(&self, source: SocketAddr) -> Option<NodeId> {
        self.entries
            .iter()
            .position(|e| e.socket == source)
            .map(|i| self.ids[i])
    }

    /// Each entry with its Raft id.
    pub(crate) fn with_ids(&self) -> impl Iterator<Item = (NodeId, &NodeEntry)> {
        self.ids.iter().copied().zip(&self.entries)
    }
}

/// Parses `ID HOST:PORT` (already stripped of comments and outer blanks).
fn parse_line(content: &str) -> Result<NodeEntry, String> {
    let mut words = content.split_whitespace();
    let (Some(id), Some(addr), None) = (words.next(), words.next(), words.next()) else {
        return Err(format!("expected `ID HOST:PORT`, found {content:?}"));
    };
    entry(id, addr)
}

/// Whether `id` follows nodes.txt's rule: 1 to 32 ASCII letters, digits, '-'
/// or '_'.
pub(crate) fn valid_id(id: &str) -> bool {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    !id.is_empty() && id.len() <= MAX_ID_BYTES && id.bytes().all(allowed)
}

/// A node entry for `id` at `addr`, checked as nodes.txt checks its lines: the
/// id is 1 to 32 letters, digits, '-' or '_'; the address resolves.
pub(crate) fn entry(id: &str, addr: &str) -> Result<NodeEntry, String> {
    if !valid_id(id) {
        return Err(format!(
            "bad id {id:?}: use up to {MAX_ID_BYTES} letters, digits, '-' or '_'"
        ));
    }
    let socket = resolve(addr)?;
    Ok(NodeEntry {
        id: id.to_string(),
        addr: addr.to_string(),
        socket,
    })
}

/// Resolves `HOST:PORT`, preferring IPv4 so that `localhost` means 127.0.0.1 on
/// every machine (the port is shared by UDP and TCP, both bound to this address).
fn resolve(addr: &str) -> Result<SocketAddr, String> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("bad address {addr:?}: expected HOST:PORT"));
    };
    if host.is_empty() {
        return Err(format!("bad address {addr:?}: empty host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(format!("bad address {addr:?}: port must be 1-65535")),
    }
    let candidates: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr:?}: {e}"))?
        .collect();
    candidates
        .iter()
        .find(|a| a.is_ipv4())
        .or(candidates.first())
        .copied()
        .ok_or_else(|| format!("cannot resolve {addr:?}: no addresses"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_default_file_with_comments_and_blank_lines() {
        let text = "# cluster\n\nA localhost:34572\nB 127.0.0.1:34573  # second\n";
        let nodes = Nodes::parse(text, "nodes.txt").expect("valid file");
        assert_eq!(nodes.entries().len(), 2);
        assert_eq!(nodes.raft_id_of("B"), Some(node_id("B")));
        assert_eq!(nodes.get(node_id("A")).map(|e| e.id.as_str()), Some("A"));
        assert_eq!(nodes.get(0), None);
        assert_eq!(nodes.get(1), None);
        assert_eq!(nodes.legacy_name(2), Some("B"));
        assert_eq!(nodes.legacy_name(3), None);
        // Ids depend on the name alone, are never 0, and differ between names.
        assert_eq!(node_id("A"), node_id("A"));
        assert_ne!(node_id("A"), node_id("B"));
        assert!((1..1 << 62).contains(&node_id("")));
        let a = nodes.get(node_id("A")).expect("A exists").socket;
        assert_eq!(a, "127.0.0.1:34572".parse().expect("literal address"));
        assert_eq!(nodes.raft_id_at(a), Some(node_id("A")));
        assert_eq!(
            nodes.raft_id_at("127.0.0.1:1".parse().expect("literal")),
            None
        );
    }

    #[test]
    fn bad_files_name_the_line_and_the_problem() {
        let cases = [
            (
                "A localhost:1\nA localhost:2\n",
                "nodes.txt line 2: duplicate id A",
            ),
            (
                "A localhost:1\nB 127.0.0.1:1\n",
                "nodes.txt line 2: duplicate address 127.0.0.1:1 (also node A)",
            ),
            (
                "A\n",
                "nodes.txt line 1: expected `ID HOST:PORT`, found \"A\"",
            ),
            (
                "A b c\n",
                "nodes.txt line 1: expected `ID HOST:PORT`, found \"A b c\"",
            ),
            (
                "A localhost\n",
                "nodes.txt line 1: bad address \"localhost\": expected HOST:PORT",
            ),
            (
                "A localhost:0\n",
                "nodes.txt line 1: bad address \"localhost:0\": port must be 1-65535",
            ),
            (
                "A localhost:70000\n",
                "nodes.txt line 1: bad address \"localhost:70000\": port must be 1-65535",
            ),
            (
                "A/B localhost:1\n",
                "nodes.txt line 1: bad id \"A/B\": use up to 32 letters, digits, '-' or '_'",
            ),
            ("# nothing\n\n", "nodes.txt: no nodes listed"),
        ];
        for (text, want) in cases {
            let got = Nodes::parse(text, "nodes.txt").expect_err(text).to_string();
            assert_eq!(got, want, "for {text:?}");
        }
    }

    #[test]
    fn an_unknown_id_is_named() {
        let nodes = Nodes::parse("A localhost:1\n", "n.txt").expect("valid");
        let err = nodes.require("Z", "n.txt").expect_err("Z is unknown");
        assert_eq!(err.to_string(), "node id \"Z\" is not in n.txt");
    }
}
