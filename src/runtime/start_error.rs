//! Why a node could not start, typed: [`StartError`] says whose the problem is
//! (its exit code: 2 for a configuration this host cannot run, 1 for a data
//! dir that cannot be used), and [`DataDirProblem`] what is wrong with the
//! data dir. `Display` is the one-line message the node prints.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::nodes::NodesError;
use crate::raft::{ConfigError, RestoreError};
use crate::storage::StorageError;
use crate::wire::WireError;

/// Why a node could not start.
#[derive(Debug)]
pub enum StartError {
    /// nodes.txt does not name this node (or cannot be used).
    Nodes(NodesError),
    /// The flags make no valid Raft configuration.
    Flags(ConfigError),
    /// This host cannot bind the node's address, or start its threads.
    Bind { what: String, source: io::Error },
    /// The data dir cannot be used.
    DataDir {
        dir: PathBuf,
        problem: DataDirProblem,
    },
}

/// What is wrong with a data dir.
#[derive(Debug)]
pub enum DataDirProblem {
    /// Another running node holds its `LOCK`.
    InUse,
    /// The disk refused an operation on one of the node's own small files
    /// (`LOCK`, `format`, `epoch`).
    Io {
        file: &'static str,
        what: &'static str,
        source: io::Error,
    },
    /// The log or a snapshot cannot be read back: storage's reason.
    Storage(StorageError),
    /// One of the node's own small files does not hold what the node writes.
    Damaged {
        file: &'static str,
        expected: &'static str,
        found: String,
    },
    /// Written by a newer raftlb-node, in a format this one cannot read.
    NewerFormat {
        found: u32,
        current: u32,
        oldest_read: u32,
    },
    /// The boot epoch has reached its largest value.
    EpochExhausted,
    /// The snapshot does not decode as a load table.
    NotATable(WireError),
    /// The Raft core refused what was restored.
    Restore(RestoreError),
}

impl StartError {
    /// The process's exit code for it: 2 when the configuration cannot work
    /// here (flags, nodes.txt, an address this host cannot bind), 1 for the
    /// data dir (unreadable, corrupt, newer, or in use by another node).
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Nodes(_) | StartError::Flags(_) | StartError::Bind { .. } => 2,
            StartError::DataDir { .. } => 1,
        }
    }

    pub(super) fn data_dir(dir: &std::path::Path) -> impl Fn(DataDirProblem) -> StartError + '_ {
        move |problem| StartError::DataDir {
            dir: dir.to_path_buf(),
            problem,
        }
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Nodes(e) => write!(f, "{e}"),
            StartError::Flags(e) => write!(f, "bad flags: {e}"),
            StartError::Bind { what, source } => write!(f, "{what}: {source}"),
            StartError::DataDir { dir, problem } => {
                write!(f, "data dir {}: {problem}", dir.display())
            }
        }
    }
}

impl fmt::Display for DataDirProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataDirProblem::InUse => f.write_str("in use by another running raftlb-node"),
            DataDirProblem::Io { file, what, source } => write!(f, "file {file}: {what}: {source}"),
            DataDirProblem::Storage(e) => write!(f, "{e}"),
            DataDirProblem::Damaged {
                file,
                expected,
                found,
            } => write!(
                f,
                "file {file} is damaged: expected {expected}, found {:?}",
                found.chars().take(40).collect::<String>()
            ),
            DataDirProblem::NewerFormat {
                found,
                current,
                oldest_read,
            } => write!(
                f,
                "it has format {found}, newer than this raftlb-node's format {current} \
                 (it reads {oldest_read} to {current}): run the raftlb-node that wrote it, or a newer one"
            ),
            DataDirProblem::EpochExhausted => f.write_str("file epoch: the epoch is exhausted"),
            DataDirProblem::NotATable(e) => write!(f, "the snapshot is not a load table: {e}"),
            DataDirProblem::Restore(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Nodes(e) => Some(e),
            StartError::Flags(e) => Some(e),
            StartError::Bind { source, .. } => Some(source),
            StartError::DataDir { problem, .. } => match problem {
                DataDirProblem::Io { source, .. } => Some(source),
                DataDirProblem::Storage(e) => Some(e),
                DataDirProblem::Restore(e) => Some(e),
                _ => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_exits_2_and_the_data_dir_1_each_on_one_line() {
        let dir = PathBuf::from("data/A");
        let cases = [
            (
                StartError::Flags(ConfigError::NotAMember(9)),
                2,
                "bad flags: node 9 is not in the bootstrap configuration",
            ),
            (
                StartError::Bind {
                    what: "cannot bind udp 192.0.2.1:1".into(),
                    source: io::Error::from(io::ErrorKind::AddrNotAvailable),
                },
                2,
                "cannot bind udp 192.0.2.1:1",
            ),
            (
                StartError::data_dir(&dir)(DataDirProblem::InUse),
                1,
                "data dir data/A: in use by another running raftlb-node",
            ),
            (
                StartError::data_dir(&dir)(DataDirProblem::NewerFormat {
                    found: 9,
                    current: 1,
                    oldest_read: 0,
                }),
                1,
                "data dir data/A: it has format 9, newer than this raftlb-node's format 1",
            ),
        ];
        for (error, code, start) in cases {
            let message = error.to_string();
            assert_eq!(error.exit_code(), code, "{message}");
            assert!(message.starts_with(start), "{message}");
            assert!(!message.contains('\n'), "{message}");
        }
    }
}
