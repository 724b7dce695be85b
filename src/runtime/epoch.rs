//! The per-boot epoch of this node's datagrams: their receivers' replay windows
//! refuse anything from an older epoch, so each boot's epoch must be larger than
//! every earlier one, even when the wall clock went back.
//!
//! epoch = max(now in µs, the last recorded epoch + 1), written and fsynced to
//! `epoch` in the data dir (temp file, fsync, rename, directory fsync) before the
//! node sends its first datagram.

use std::time::{SystemTime, UNIX_EPOCH};

use super::start_error::DataDirProblem;
use crate::storage::{replace_durably, Dir};

/// The file in the data dir.
const EPOCH_NAME: &str = "epoch";
const EPOCH_TEMP_NAME: &str = "epoch.tmp";
/// A decimal u64 and a newline; anything longer is not ours.
const EPOCH_FILE_BYTES_MAX: u64 = 32;

/// The wall clock in µs since the Unix epoch (0 if it is before it).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Chooses this boot's epoch and records it durably.
pub(crate) fn next_epoch<D: Dir>(dir: &mut D, now_us: u64) -> Result<u64, DataDirProblem> {
    let fail = |what: &'static str| {
        move |source| DataDirProblem::Io {
            file: EPOCH_NAME,
            what,
            source,
        }
    };
    let last = if dir
        .list()
        .map_err(fail("listing"))?
        .iter()
        .any(|n| n == EPOCH_NAME)
    {
        let bytes = dir
            .read(EPOCH_NAME, EPOCH_FILE_BYTES_MAX)
            .map_err(fail("cannot read"))?;
        let text = String::from_utf8_lossy(&bytes);
        let last = text
            .trim()
            .parse::<u64>()
            .map_err(|_| DataDirProblem::Damaged {
                file: EPOCH_NAME,
                expected:
                    "a decimal number (remove the file only if this node's clock never went back)",
                found: text.to_string(),
            })?;
        Some(last)
    } else {
        None
    };
    let epoch = match last {
        Some(u64::MAX) => return Err(DataDirProblem::EpochExhausted),
        Some(last) => now_us.max(last + 1),
        None => now_us,
    };
    let text = format!("{epoch}\n");
    replace_durably(dir, EPOCH_TEMP_NAME, EPOCH_NAME, text.as_bytes())
        .map_err(fail("cannot write"))?;
    Ok(epoch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemDir;

    #[test]
    fn the_epoch_grows_across_boots_even_when_the_clock_goes_back() {
        let mut dir = MemDir::new();
        let mut next = |now| next_epoch(&mut dir, now).expect("recorded");
        assert_eq!(next(1_000), 1_000);
        assert_eq!(next(5_000), 5_000, "the clock moved on");
        assert_eq!(next(10), 5_001, "the clock went back");
        assert_eq!(next(5_001), 5_002, "the same µs twice");
        let recorded = dir.read(EPOCH_NAME, 100).expect("recorded");
        assert_eq!(recorded, b"5002\n");
    }

    #[test]
    fn a_damaged_epoch_file_refuses_to_start_naming_it() {
        let mut dir = MemDir::new();
        dir.write_new(EPOCH_NAME, b"garbage").expect("write");
        let message = next_epoch(&mut dir, 1).expect_err("damaged").to_string();
        assert!(
            message.contains("epoch") && !message.contains('\n'),
            "{message}"
        );
    }
}
