//! This data dir's incarnation: a random number drawn when the dir is first
//! used, in the file `incarnation`, carried by every Raft message the node
//! sends (`raft::Config::incarnation`). The cluster binds each member to the
//! incarnation it first heard from; a node whose disk was lost comes back with
//! an empty dir, hence a new incarnation, and its votes and acknowledgements
//! count for nothing until it is removed and added back (`raft::membership`).
//!
//! Written durably (temp file, fsync, rename, dir fsync) before the node
//! sends anything, so it never changes under a running node.

use super::start_error::DataDirProblem;
use crate::storage::{replace_durably, Dir};

const NAME: &str = "incarnation";
const TEMP_NAME: &str = "incarnation.tmp";
/// Sixteen hex digits and a newline; anything longer is not ours.
const FILE_BYTES_MAX: u64 = 32;

/// The incarnation recorded in `dir`, or a new one drawn from `seed` (never
/// 0), recorded first.
pub(crate) fn load_or_create<D: Dir>(dir: &mut D, seed: u64) -> Result<u64, DataDirProblem> {
    let fail = |what: &'static str| {
        move |source| DataDirProblem::Io {
            file: NAME,
            what,
            source,
        }
    };
    if dir
        .list()
        .map_err(fail("listing"))?
        .iter()
        .any(|n| n == NAME)
    {
        let bytes = dir
            .read(NAME, FILE_BYTES_MAX)
            .map_err(fail("cannot read"))?;
        let text = String::from_utf8_lossy(&bytes);
        return u64::from_str_radix(text.trim(), 16)
            .ok()
            .filter(|&n| n != 0)
            .ok_or_else(|| DataDirProblem::Damaged {
                file: NAME,
                expected: "16 hex digits, not all zero",
                found: text.to_string(),
            });
    }
    // splitmix64's finalizer: nearby seeds give unrelated values.
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    let incarnation = (z ^ (z >> 31)).max(1);
    let text = format!("{incarnation:016x}\n");
    replace_durably(dir, TEMP_NAME, NAME, text.as_bytes()).map_err(fail("cannot write"))?;
    Ok(incarnation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemDir;

    #[test]
    fn drawn_once_then_read_back_even_after_a_crash() {
        let mut dir = MemDir::new();
        let first = load_or_create(&mut dir, 42).expect("new");
        assert_ne!(first, 0);
        dir.crash(7);
        assert_eq!(load_or_create(&mut dir, 43).expect("kept"), first);
        let mut other = MemDir::new();
        assert_ne!(load_or_create(&mut other, 43).expect("new"), first);
    }

    #[test]
    fn a_damaged_file_is_refused_naming_it() {
        for bad in [&b"zz"[..], b"0000000000000000\n", &[0xff; 40]] {
            let mut dir = MemDir::new();
            dir.write_new(NAME, bad).expect("write");
            let message = load_or_create(&mut dir, 1)
                .expect_err("damaged")
                .to_string();
            assert!(message.contains(NAME), "{message}");
        }
    }
}
