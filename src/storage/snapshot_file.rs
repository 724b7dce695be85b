//! The snapshot file: one state-machine snapshot with its place in the log.
//!
//! Format 2 (written since membership changes), little-endian: `magic u32 |
//! index u64 | term u64 | configuration length u32 | data length u64 | crc32
//! u32 | configuration | data`, the CRC covering the fields before it, the
//! configuration (`Membership::encode`; length 0: none recorded) and the data.
//! Format 1 (read, never written) is `magic u32 | index u64 | term u64 | data
//! length u64 | crc32 u32 | data`, with its own magic; it had no configuration.
//! The file is written to a temp name, fsynced and renamed into place, so a file
//! under its final name is whole: any damage found in it is corruption, never a
//! torn write.
//!
//! Files are named `snapshot-<index, 20 digits>` so the newest sorts last and can
//! be found without reading the others.

use crate::raft::{Membership, Snapshot, SnapshotMeta};

/// Format 1's magic (no configuration).
const MAGIC_V1: u32 = 0x5246_534E;
const HEADER_V1_BYTES: usize = 4 + 8 + 8 + 8 + 4;
/// Format 2's magic.
const MAGIC: u32 = 0x5246_5332;
const HEADER_BYTES: usize = 4 + 8 + 8 + 4 + 8 + 4;
/// The largest configuration a snapshot file holds.
const MAX_CONFIG_BYTES: usize = crate::raft::MAX_MEMBERSHIP_BYTES;
/// The largest snapshot data accepted, so a damaged length cannot exhaust memory.
pub const MAX_DATA_BYTES: u64 = 64 << 20;
/// The largest snapshot file, to bound the read at start.
pub const MAX_FILE_BYTES: u64 = MAX_DATA_BYTES + (HEADER_BYTES + MAX_CONFIG_BYTES) as u64;
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
    let config = snapshot
        .membership
        .as_ref()
        .map(Membership::encode)
        .unwrap_or_default();
    let mut bytes = Vec::with_capacity(HEADER_BYTES + config.len() + snapshot.data.len());
    bytes.extend_from_slice(&MAGIC.to_le_bytes());
    bytes.extend_from_slice(&snapshot.meta.index.to_le_bytes());
    bytes.extend_from_slice(&snapshot.meta.term.to_le_bytes());
    bytes.extend_from_slice(&(config.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&(snapshot.data.len() as u64).to_le_bytes());
    let crc = checksum(&[&bytes[..HEADER_BYTES - 4], &config, &snapshot.data]);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes.extend_from_slice(&config);
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
    /// The configuration it records does not decode (or is too long).
    BadConfig(String),
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
            SnapshotFault::BadConfig(reason) => write!(f, "bad configuration: {reason}"),
        }
    }
}

/// Decodes a whole snapshot file (format 2, or format 1 written by an older
/// version); the error says what is wrong with it.
pub(crate) fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotFault> {
    if bytes.len() < 4 {
        return Err(SnapshotFault::TruncatedHeader(bytes.len()));
    }
    let u32_at = |at: usize| {
        let mut word = [0; 4];
        word.copy_from_slice(&bytes[at..at + 4]);
        u32::from_le_bytes(word)
    };
    let u64_at = |at: usize| {
        let mut word = [0; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(word)
    };
    let (header, config_len, data_len) = match u32_at(0) {
        MAGIC if bytes.len() >= HEADER_BYTES => (HEADER_BYTES, u32_at(20) as usize, u64_at(24)),
        MAGIC_V1 if bytes.len() >= HEADER_V1_BYTES => (HEADER_V1_BYTES, 0, u64_at(20)),
        MAGIC | MAGIC_V1 => return Err(SnapshotFault::TruncatedHeader(bytes.len())),
        _ => return Err(SnapshotFault::BadMagic),
    };
    if config_len > MAX_CONFIG_BYTES {
        return Err(SnapshotFault::BadConfig(format!(
            "{config_len} bytes (at most {MAX_CONFIG_BYTES})"
        )));
    }
    if data_len > MAX_DATA_BYTES {
        return Err(SnapshotFault::TooLong(data_len));
    }
    let rest = &bytes[header..];
    if rest.len() as u64 != config_len as u64 + data_len {
        return Err(SnapshotFault::LengthMismatch {
            declared: data_len,
            found: rest.len().saturating_sub(config_len),
        });
    }
    let (config, data) = rest.split_at(config_len);
    if checksum(&[&bytes[..header - 4], config, data]) != u32_at(header - 4) {
        return Err(SnapshotFault::BadCrc);
    }
    let membership = if config.is_empty() {
        None
    } else {
        Some(Membership::decode(config).map_err(|e| SnapshotFault::BadConfig(e.to_string()))?)
    };
    Ok(Snapshot {
        meta: SnapshotMeta {
            index: u64_at(4),
            term: u64_at(12),
        },
        membership,
        data: data.to_vec(),
    })
}

fn checksum(parts: &[&[u8]]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            meta: SnapshotMeta { index: 9, term: 4 },
            membership: Some(Membership::of_voters(&[1, 2, 3]).expect("valid")),
            data: b"table".to_vec(),
        }
    }

    #[test]
    fn snapshot_round_trips() {
        assert_eq!(decode(&encode(&snapshot())), Ok(snapshot()));
        let without = Snapshot {
            membership: None,
            ..snapshot()
        };
        assert_eq!(decode(&encode(&without)), Ok(without));
    }

    /// Format 1's bytes, as the version before membership changes wrote them.
    fn encode_v1(snapshot: &Snapshot) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&MAGIC_V1.to_le_bytes());
        bytes.extend_from_slice(&snapshot.meta.index.to_le_bytes());
        bytes.extend_from_slice(&snapshot.meta.term.to_le_bytes());
        bytes.extend_from_slice(&(snapshot.data.len() as u64).to_le_bytes());
        let crc = checksum(&[&bytes[..], &snapshot.data]);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes.extend_from_slice(&snapshot.data);
        bytes
    }

    #[test]
    fn a_format_1_snapshot_is_read_without_a_configuration() {
        let v1 = encode_v1(&snapshot());
        let read = decode(&v1).expect("format 1 reads");
        assert_eq!(read.meta, snapshot().meta);
        assert_eq!(read.membership, None);
        assert_eq!(read.data, snapshot().data);
    }

    #[test]
    fn any_flipped_byte_or_cut_is_refused() {
        for bytes in [encode(&snapshot()), encode_v1(&snapshot())] {
            for at in 0..bytes.len() {
                let mut damaged = bytes.clone();
                damaged[at] ^= 0xFF;
                assert!(decode(&damaged).is_err(), "flip at {at}");
                assert!(decode(&bytes[..at]).is_err(), "cut at {at}");
            }
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
