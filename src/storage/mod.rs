//! The data dir: the Raft hard state, log and snapshot, durable before anything
//! that depends on them is said.
//!
//! A data dir holds two kinds of file:
//! - `log`: records (`record`) appended in order, hard states and entries mixed. Replay
//!   keeps the last hard state, and an entry whose index is at or below the last
//!   one replaces the suffix from there (Raft's conflict truncation costs one
//!   append, never a rewrite).
//! - `snapshot-<index>`: the newest state-machine snapshot (`snapshot_file`).
//!   Installing one rewrites the log without the entries it covers.
//!
//! Writes are grouped: the runtime calls [`Storage::append`] and
//! [`Storage::set_hard_state`] for a whole round and then [`Storage::sync`] once,
//! the single fsync that makes the round durable. Files are replaced only through
//! a temp file, fsync, rename and directory fsync, so a crash at any point leaves
//! either the old or the new file, and [`Storage::open`] recovers from every such
//! point. A torn tail of the log (unsynced bytes a crash cut) is cut back to the
//! last intact record; damage anywhere else stops the node with an error naming
//! the file and offset, because starting on a silently shortened log could undo
//! what this node promised to its peers.
//!
//! The file operations go through [`Dir`], so the same code runs on a real
//! directory ([`FsDir`]) and on the simulator's disk ([`MemDir`]).

mod dir;
mod memdir;
mod record;
mod recover;
pub(crate) mod snapshot_file;
mod wal;

use std::fmt;
use std::io;

pub(crate) use dir::replace_durably;
pub use dir::{Dir, FsDir};
pub use memdir::MemDir;
pub use record::MAX_ENTRY_DATA_BYTES;
pub use snapshot_file::MAX_DATA_BYTES as MAX_SNAPSHOT_DATA_BYTES;
pub use wal::Storage;

/// The log's file name.
pub const LOG_NAME: &str = "log";
/// Where a rewritten log is built before it replaces [`LOG_NAME`].
const LOG_TEMP_NAME: &str = "log.tmp";
/// The largest the log may grow: the whole log is read at start, so this bounds the
/// memory and time a restart takes. Snapshots keep the log far below it; reaching
/// it means compaction stopped.
pub(crate) const MAX_LOG_FILE_BYTES: u64 = 1 << 30;

/// Everything that can go wrong in the storage layer.
#[derive(Debug)]
pub enum StorageError {
    /// The disk refused an operation; `context` says which and on what file.
    Io { context: String, source: io::Error },
    /// A file holds damage that a crash cannot explain (not a torn tail): starting
    /// would risk forgetting what this node promised, so an operator must look.
    Corrupt {
        file: String,
        offset: u64,
        reason: String,
    },
    /// The caller asked for something storage must not do (a gap in the log, an
    /// entry too large, use after a failed write).
    Invalid(String),
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Io { context, source } => write!(f, "{context}: {source}"),
            StorageError::Corrupt {
                file,
                offset,
                reason,
            } => write!(f, "data dir corrupt: {file} at offset {offset}: {reason}"),
            StorageError::Invalid(message) => write!(f, "invalid storage request: {message}"),
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Wraps an I/O error with what was being done, for `map_err`.
fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> StorageError {
    let context = context.into();
    move |source| StorageError::Io { context, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_and_name_the_file() {
        let corrupt = StorageError::Corrupt {
            file: LOG_NAME.to_string(),
            offset: 1234,
            reason: "bad crc".to_string(),
        };
        assert_eq!(
            corrupt.to_string(),
            "data dir corrupt: log at offset 1234: bad crc"
        );
        let io = io_error("syncing log")(io::Error::other("disk on fire"));
        assert_eq!(io.to_string(), "syncing log: disk on fire");
    }
}

#[cfg(test)]
mod tests_storage;
