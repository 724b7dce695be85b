//! The snapshot file: one state-machine snapshot with its place in the log.
//!
//! Format, little-endian: `magic u32 | index u64 | term u64 | data length u64 |
//! crc32 u32 | data`, the CRC covering the four fields before it and the data.
//! The file is written to a temp name, fsynced and renamed into place, so a file
//! under its final name is whole: any damage found in it is corruption, never a
//! torn write.
//!
//! Files are named `snapshot-<index, 20 digits>` so the newest sorts last and can
//! be found without reading the others.

use crate::raft::{Snapshot, SnapshotMeta};

const MAGIC: u32 = 0x5246_534E;
const HEADER_BYTES: usize = 4 + 8 + 8 + 8 + 4;
/// The largest snapshot data accepted, so a damaged length cannot exhaust memory.
pub const MAX_DATA_BYTES: u64 = 64 << 20;
/// The largest snapshot file, to bound the read at start.
pub const MAX_FILE_BYTES: u64 = MAX_DATA_BYTES + HEADER_BYTES as u64;
/// Where a snapshot is written before its rename; removed on open if found.
pub(crate) const TEMP_NAME: &str = "snapshot.tmp";
const PREFIX: &str = "snapshot-";

/// The file name of the snapshot ending at `index`.
pub fn name(index: u64) -> String {
    format!("{PREFIX}{index:020}")
}

/// The index in a snapshot file name, or None when `name` is not one.
pub(crate) fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The file's bytes. The caller keeps the data within [`MAX_DATA_BYTES`].
pub fn encode(snapshot: &Snapshot) -> Vec<u8> {
    assert!(
        snapshot.data.len() as u64 <= MAX_DATA_BYTES,
        "caller checks the size"
    );
    let mut bytes = Vec::with_capacity(HEADER_BYTES + snapshot.data.len());
    bytes.extend_from_slice(&MAGIC.to_le_bytes());
    bytes.extend_from_slice(&snapshot.meta.index.to_le_bytes());
    bytes.extend_from_slice(&snapshot.meta.term.to_le_bytes());
    bytes.extend_from_slice(&(snapshot.data.len() as u64).to_le_bytes());
    let crc = checksum(&bytes[..HEADER_BYTES - 4], &snapshot.data);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes.extend_from_slice(&snapshot.data);
    bytes
}

/// What is wrong with a snapshot file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SnapshotFault {
    /// Shorter than its header (this many bytes).
    TruncatedHeader(usize),
    BadMagic,
    /// The header declares more data than a snapshot may hold.
    TooLong(u64),
    /// The header declares `declared` bytes of data, `found` follow it.
    LengthMismatch {
        declared: u64,
        found: usize,
    },
    BadCrc,
}

impl std::fmt::Display for SnapshotFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotFault::TruncatedHeader(n) => write!(f, "truncated header ({n} bytes)"),
            SnapshotFault::BadMagic => f.write_str("bad magic"),
            SnapshotFault::TooLong(n) => {
                write!(f, "data length {n} exceeds the {MAX_DATA_BYTES}-byte limit")
            }
            SnapshotFault::LengthMismatch { declared, found } => write!(
                f,
                "data length {declared} but {found} bytes follow the header"
            ),
            SnapshotFault::BadCrc => f.write_str("bad crc"),
        }
    }
}

/// Decodes a whole snapshot file; the error says what is wrong with it.
pub(crate) fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotFault> {
    if bytes.len() < HEADER_BYTES {
        return Err(SnapshotFault::TruncatedHeader(bytes.len()));
    }
    let u64_at = |at: usize| {
        let mut word = [0; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(word)
    };
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[0..4]);
    if u32::from_le_bytes(word) != MAGIC {
        return Err(SnapshotFault::BadMagic);
    }
    let data_len = u64_at(20);
    if data_len > MAX_DATA_BYTES {
        return Err(SnapshotFault::TooLong(data_len));
    }
    let data = &bytes[HEADER_BYTES..];
    if data.len() as u64 != data_len {
        return Err(SnapshotFault::LengthMismatch {
            declared: data_len,
            found: data.len(),
        });
    }
    word.copy_from_slice(&bytes[HEADER_BYTES - 4..HEADER_BYTES]);
    if checksum(&bytes[..HEADER_BYTES - 4], data) != u32::from_le_bytes(word) {
        return Err(SnapshotFault::BadCrc);
    }
    Ok(Snapshot {
        meta: SnapshotMeta {
            index: u64_at(4),
            term: u64_at(12),
        },
        data: data.to_vec(),
    })
}

fn checksum(header: &[u8], data: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(header);
    hasher.update(data);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            meta: SnapshotMeta { index: 9, term: 4 },
            data: b"table".to_vec(),
        }
    }

    #[test]
    fn snapshot_round_trips() {
        assert_eq!(decode(&encode(&snapshot())), Ok(snapshot()));
    }

    #[test]
    fn any_flipped_byte_or_cut_is_refused() {
        let bytes = encode(&snapshot());
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0xFF;
            assert!(decode(&damaged).is_err(), "flip at {at}");
            assert!(decode(&bytes[..at]).is_err(), "cut at {at}");
        }
    }

    #[test]
    fn names_sort_by_index_and_parse_back() {
        assert!(name(9) < name(10));
        assert_eq!(parse_name(&name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_name("snapshot-12"), None);
        assert_eq!(parse_name(TEMP_NAME), None);
    }
}
