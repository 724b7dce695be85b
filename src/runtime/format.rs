//! The data dir's format version, in the file `format` ("raftlb data dir
//! format N"), so that a node never misreads a data dir written by another
//! version of itself.
//!
//! Format 2 is the layout described in `crate::storage` (`log`, `snapshot-*`)
//! plus `epoch`, with configuration entries in the log and the configuration
//! in each snapshot file (membership changes). Format 1 is the same without
//! them: read as it is (its snapshots have their own magic) and recorded as 2,
//! after which a version that knows only format 1 refuses the dir instead of
//! misreading a configuration entry. A data dir without the file was written
//! before the version was recorded: format 1's layout (format 0).
//! A newer format than this binary knows is refused, naming both, before
//! anything in the dir is read or written.

use super::start_error::DataDirProblem;
use crate::storage::{replace_durably, Dir};

/// The format this binary writes.
pub(crate) const CURRENT: u32 = 2;
/// The oldest format this binary reads.
pub(crate) const OLDEST_READ: u32 = 0;

const FORMAT_NAME: &str = "format";
const FORMAT_TEMP_NAME: &str = "format.tmp";
const PREFIX: &str = "raftlb data dir format ";
/// The file is one short line; anything longer is not ours.
const FORMAT_FILE_BYTES_MAX: u64 = 64;

/// The first format whose Raft ids are derived from node names
/// (`nodes::node_id`); before it, an id was a position in nodes.txt.
pub(crate) const NAMED_IDS: u32 = 2;

/// Checks the data dir's format and records [`CURRENT`] (fsynced) if it was
/// older or not recorded; returns the format found (None: not recorded, a new
/// dir or format 0). A newer format's error names both versions.
pub(crate) fn check_and_record<D: Dir>(dir: &mut D) -> Result<Option<u32>, DataDirProblem> {
    let fail = |what: &'static str| {
        move |source| DataDirProblem::Io {
            file: FORMAT_NAME,
            what,
            source,
        }
    };
    let names = dir.list().map_err(fail("listing"))?;
    let found = if names.iter().any(|n| n == FORMAT_NAME) {
        let bytes = dir
            .read(FORMAT_NAME, FORMAT_FILE_BYTES_MAX)
            .map_err(fail("cannot read"))?;
        let text = String::from_utf8_lossy(&bytes);
        let version = text
            .trim_end()
            .strip_prefix(PREFIX)
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| DataDirProblem::Damaged {
                file: FORMAT_NAME,
                expected: "\"raftlb data dir format N\"",
                found: text.to_string(),
            })?;
        Some(version)
    } else {
        None
    };
    match found {
        Some(CURRENT) => return Ok(found),
        Some(version) if version > CURRENT => {
            return Err(DataDirProblem::NewerFormat {
                found: version,
                current: CURRENT,
                oldest_read: OLDEST_READ,
            })
        }
        // Not recorded, or an older format this binary reads (every one from
        // OLDEST_READ, which is 0, so far): record ours.
        _ => {}
    }
    let text = format!("{PREFIX}{CURRENT}\n");
    replace_durably(dir, FORMAT_TEMP_NAME, FORMAT_NAME, text.as_bytes())
        .map_err(fail("cannot write"))?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemDir;

    #[test]
    fn a_new_or_unversioned_dir_is_recorded_as_the_current_format() {
        let mut dir = MemDir::new();
        check_and_record(&mut dir).expect("a new dir");
        let recorded = dir.read(FORMAT_NAME, 100).expect("recorded");
        assert_eq!(recorded, b"raftlb data dir format 2\n");
        check_and_record(&mut dir).expect("and read back");
    }

    #[test]
    fn a_format_1_dir_is_read_and_recorded_as_2() {
        let mut dir = MemDir::new();
        dir.write_new(FORMAT_NAME, b"raftlb data dir format 1\n")
            .expect("write");
        check_and_record(&mut dir).expect("format 1 is read");
        let recorded = dir.read(FORMAT_NAME, 100).expect("recorded");
        assert_eq!(recorded, b"raftlb data dir format 2\n");
    }

    #[test]
    fn a_newer_format_is_refused_naming_both() {
        let mut dir = MemDir::new();
        dir.write_new(FORMAT_NAME, b"raftlb data dir format 3\n")
            .expect("write");
        let message = check_and_record(&mut dir).expect_err("newer").to_string();
        assert!(
            message.contains("format 3") && message.contains("format 2"),
            "{message}"
        );
        assert_eq!(
            dir.read(FORMAT_NAME, 100).expect("kept"),
            b"raftlb data dir format 3\n",
            "a refused dir is left as it was"
        );
    }

    #[test]
    fn a_damaged_format_file_is_refused_naming_it() {
        for bad in [&b"garbage"[..], b"raftlb data dir format x", &[0xff; 10]] {
            let mut dir = MemDir::new();
            dir.write_new(FORMAT_NAME, bad).expect("write");
            let message = check_and_record(&mut dir).expect_err("damaged").to_string();
            assert!(
                message.contains("format") && !message.contains('\n'),
                "{message}"
            );
        }
    }
}
