//! This data dir's incarnation: a random number drawn when the dir is first
//! used, in the file `incarnation`, carried by every Raft message the node
//! sends (`raft::Config::incarnation`). The cluster binds each member to the
//! incarnation it first heard from; a node whose disk was lost comes back with
//! an empty dir, hence a new incarnation, and its votes and acknowledgements
//! count for nothing until it is removed and added back (`raft::membership`).
//!
//! A data dir that held no Raft state when the incarnation was drawn (a new
//! node, or one whose disk was lost) is recorded as *joining* in the same
//! file (`<hex> joining`): the core then grants votes only as
//! `raft::Config::joining` says, until the cluster binds this incarnation.
//! The binding lives in the log, so the mark is never removed: once the log
//! binds the node, the mark no longer matters.
//!
//! Written durably (temp file, fsync, rename, dir fsync) before the node
//! sends anything, so it never changes under a running node.

use super::start_error::DataDirProblem;
use crate::storage::{replace_durably, snapshot_file, Dir, LOG_NAME};

const NAME: &str = "incarnation";
const TEMP_NAME: &str = "incarnation.tmp";
/// Sixteen hex digits, " joining" and a newline; anything longer is not ours.
const FILE_BYTES_MAX: u64 = 32;
const JOINING: &str = "joining";

/// This data dir's incarnation, and whether it started empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Incarnation {
    pub value: u64,
    pub joining: bool,
}

/// The incarnation recorded in `dir`, or a new one drawn from `seed` (never
/// 0), recorded first, joining when the dir holds no log and no snapshot.
pub(crate) fn load_or_create<D: Dir>(
    dir: &mut D,
    seed: u64,
) -> Result<Incarnation, DataDirProblem> {
    let fail = |what: &'static str| {
        move |source| DataDirProblem::Io {
            file: NAME,
            what,
            source,
        }
    };
    let names = dir.list().map_err(fail("listing"))?;
    if names.iter().any(|n| n == NAME) {
        let bytes = dir
            .read(NAME, FILE_BYTES_MAX)
            .map_err(fail("cannot read"))?;
        let text = String::from_utf8_lossy(&bytes);
        let mut words = text.split_whitespace();
        let value = words
            .next()
            .and_then(|w| u64::from_str_radix(w, 16).ok())
            .filter(|&n| n != 0);
        let joining = match words.next() {
            None => Some(false),
            Some(JOINING) => Some(true),
            Some(_) => None,
        };
        return match (value, joining, words.next()) {
            (Some(value), Some(joining), None) => Ok(Incarnation { value, joining }),
            _ => Err(DataDirProblem::Damaged {
                file: NAME,
                expected: "16 hex digits, not all zero, then \"joining\" or nothing",
                found: text.to_string(),
            }),
        };
    }
    let joining = !names
        .iter()
        .any(|n| n == LOG_NAME || snapshot_file::parse_name(n).is_some());
    // splitmix64's finalizer: nearby seeds give unrelated values.
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    let value = (z ^ (z >> 31)).max(1);
    let text = if joining {
        format!("{value:016x} {JOINING}\n")
    } else {
        format!("{value:016x}\n")
    };
    replace_durably(dir, TEMP_NAME, NAME, text.as_bytes()).map_err(fail("cannot write"))?;
    Ok(Incarnation { value, joining })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemDir;

    #[test]
    fn drawn_once_then_read_back_even_after_a_crash() {
        let mut dir = MemDir::new();
        let first = load_or_create(&mut dir, 42).expect("new");
        assert_ne!(first.value, 0);
        assert!(first.joining, "an empty dir joins");
        dir.crash(7);
        assert_eq!(load_or_create(&mut dir, 43).expect("kept"), first);
        let mut other = MemDir::new();
        assert_ne!(
            load_or_create(&mut other, 43).expect("new").value,
            first.value
        );
    }

    #[test]
    fn a_dir_with_a_log_or_a_snapshot_does_not_join() {
        for held in [LOG_NAME.to_string(), snapshot_file::name(12)] {
            let mut dir = MemDir::new();
            dir.write_new(&held, b"").expect("write");
            let drawn = load_or_create(&mut dir, 5).expect("new");
            assert!(!drawn.joining, "{held}");
            assert_eq!(load_or_create(&mut dir, 6).expect("kept"), drawn);
        }
        // The previous version's file (no mark) reads as not joining.
        let mut dir = MemDir::new();
        dir.write_new(NAME, b"00000000000000ab\n").expect("write");
        let read = load_or_create(&mut dir, 1).expect("read");
        assert_eq!((read.value, read.joining), (0xab, false));
    }

    #[test]
    fn a_damaged_file_is_refused_naming_it() {
        for bad in [
            &b"zz"[..],
            b"0000000000000000\n",
            &[0xff; 40],
            b"00000000000000ab leaving\n",
            b"00000000000000ab joining x\n",
        ] {
            let mut dir = MemDir::new();
            dir.write_new(NAME, bad).expect("write");
            let message = load_or_create(&mut dir, 1)
                .expect_err("damaged")
                .to_string();
            assert!(message.contains(NAME), "{message}");
        }
    }
}
