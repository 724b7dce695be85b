//! Where the client finds the cluster, as etcdctl does: `--nodes FILE`, else
//! the `RAFTLB_NODES` variable (a nodes file, or a comma list of
//! `ID=HOST:PORT`), else `./nodes.txt`. So the client works outside the
//! checkout without a flag on every command, and a missing configuration names
//! all three places it looked.

use std::path::{Path, PathBuf};

use crate::nodes::{Nodes, NodesError};

/// The environment variable the client reads its nodes from.
pub const NODES_VAR: &str = "RAFTLB_NODES";
/// The file read when neither `--nodes` nor `RAFTLB_NODES` is given.
pub(crate) const DEFAULT_FILE: &str = "nodes.txt";

/// The nodes, and the file whose directory holds the default cluster key
/// (`cluster.key` beside it; for a comma list, the current directory).
#[derive(Debug)]
pub struct Found {
    pub nodes: Nodes,
    pub key_beside: PathBuf,
}

/// Finds the nodes from the flag, else `env` (the value of `RAFTLB_NODES`),
/// else `./nodes.txt`. The error is one line a user can act on.
pub fn find(flag: Option<&Path>, env: Option<&str>) -> Result<Found, DiscoverError> {
    if let Some(file) = flag {
        return load_file(file).map_err(DiscoverError::Flag);
    }
    match env.map(str::trim) {
        Some(value) if value.contains('=') => Ok(Found {
            nodes: parse_list(value).map_err(DiscoverError::List)?,
            key_beside: PathBuf::from(DEFAULT_FILE),
        }),
        Some(value) if !value.is_empty() => {
            load_file(Path::new(value)).map_err(DiscoverError::EnvFile)
        }
        _ => match Nodes::load(Path::new(DEFAULT_FILE)) {
            Ok(nodes) => Ok(Found {
                nodes,
                key_beside: PathBuf::from(DEFAULT_FILE),
            }),
            Err(NodesError::Read { reason, .. }) => Err(DiscoverError::Nowhere(reason)),
            Err(e) => Err(DiscoverError::Default(e)),
        },
    }
}

/// Why no nodes were found; `Display` is one line a user can act on.
#[derive(Debug, PartialEq, Eq)]
pub enum DiscoverError {
    /// The `--nodes` file is unreadable or wrong.
    Flag(NodesError),
    /// `RAFTLB_NODES` names a file that is unreadable or wrong.
    EnvFile(NodesError),
    /// `RAFTLB_NODES` is a list with a wrong item (the reason names it).
    List(String),
    /// Neither given, and ./nodes.txt cannot be read (why).
    Nowhere(String),
    /// ./nodes.txt is wrong.
    Default(NodesError),
}

impl std::fmt::Display for DiscoverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiscoverError::Flag(e) | DiscoverError::Default(e) => write!(f, "{e}"),
            DiscoverError::EnvFile(e) => write!(f, "{e} (from {NODES_VAR})"),
            DiscoverError::List(reason) => f.write_str(reason),
            DiscoverError::Nowhere(reason) => write!(
                f,
                "no nodes: --nodes FILE was not given, {NODES_VAR} is not set (a file, \
                 or ID=HOST:PORT,ID=HOST:PORT,…), and cannot read ./{DEFAULT_FILE}: {reason}"
            ),
        }
    }
}

impl std::error::Error for DiscoverError {}

fn load_file(file: &Path) -> Result<Found, NodesError> {
    let nodes = Nodes::load(file)?;
    Ok(Found {
        nodes,
        key_beside: file.to_path_buf(),
    })
}

/// `A=localhost:34572,B=localhost:34573`: the nodes file's lines, written as
/// one value; the same rules (and messages, naming the item) apply.
fn parse_list(value: &str) -> Result<Nodes, String> {
    let mut text = String::new();
    for item in value.split(',') {
        let item = item.trim();
        let (id, addr) = item
            .split_once('=')
            .ok_or_else(|| format!("{NODES_VAR}: {item:?} is not ID=HOST:PORT"))?;
        text.push_str(&format!("{} {}\n", id.trim(), addr.trim()));
    }
    Nodes::parse(&text, NODES_VAR).map_err(|e| e.to_string().replace(" line ", " item "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_then_the_variable_then_nodes_txt() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("cluster-nodes");
        std::fs::write(&file, "A 127.0.0.1:4001\n").expect("write");
        let flagged = find(Some(&file), Some("Z=127.0.0.1:9")).expect("the flag");
        assert_eq!(flagged.nodes.entries()[0].id, "A");
        assert_eq!(flagged.key_beside, file);
        let env_file = find(None, file.to_str()).expect("the variable as a file");
        assert_eq!(env_file.nodes.entries()[0].id, "A");
        let list = find(None, Some("B=127.0.0.1:4002, C=127.0.0.1:4003")).expect("a list");
        let ids: Vec<&str> = list.nodes.entries().iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["B", "C"]);
        assert_eq!(list.key_beside, Path::new("nodes.txt"));
    }

    #[test]
    fn a_bad_list_names_the_variable_and_the_item() {
        let err = find(None, Some("A=127.0.0.1:1,B")).expect_err("no =");
        assert_eq!(err.to_string(), "RAFTLB_NODES: \"B\" is not ID=HOST:PORT");
        let err = find(None, Some("A=127.0.0.1:1,A=127.0.0.1:2"))
            .expect_err("duplicate")
            .to_string();
        assert!(
            err.starts_with("RAFTLB_NODES item 2: duplicate id A"),
            "{err}"
        );
        let err = find(None, Some("/nonexistent/n.txt")).expect_err("missing file");
        assert!(
            matches!(err, DiscoverError::EnvFile(NodesError::Read { .. })),
            "{err:?}"
        );
        let err = err.to_string();
        assert!(err.contains("/nonexistent/n.txt") && err.ends_with("(from RAFTLB_NODES)"));
    }
}
