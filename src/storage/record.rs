//! The log's record framing and payloads, hand-written little-endian so the format
//! on disk stays the same whatever codec the network uses.
//!
//! A record is `magic u32 | payload length u32 | crc32(payload) u32 | payload`.
//! The payload starts with a kind byte:
//! - `1` hard state: `term u64 | vote u64 (0 = none; node ids are >= 1) | commit u64`;
//! - `2` entry: `term u64 | index u64 | entry kind u8 (0 noop, 1 command, 2
//!   configuration, since data dir format 2) | data length u32 | data`.
//!
//! [`scan`] reads records until the first one that fails and says why and where;
//! [`valid_frame_after`] tells whether any intact record follows that point, which
//! is how recovery tells a torn tail (cut it) from damage inside the log (refuse).

use crate::raft::{Entry, EntryKind, HardState};

/// Marks the start of a record; a torn or foreign write rarely starts with it.
const MAGIC: u32 = 0x5246_4C52;
const HEADER_BYTES: usize = 12;
/// The largest payload a record may have: a damaged length prefix must never make
/// recovery allocate or trust more than this.
pub(crate) const MAX_PAYLOAD_BYTES: usize = 1 << 20;
const KIND_HARD_STATE: u8 = 1;
const KIND_ENTRY: u8 = 2;
const ENTRY_FIXED_BYTES: usize = 1 + 8 + 8 + 1 + 4;
/// The largest entry data a record can carry.
pub const MAX_ENTRY_DATA_BYTES: usize = MAX_PAYLOAD_BYTES - ENTRY_FIXED_BYTES;

/// What one log record holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    HardState(HardState),
    Entry(Entry),
}

/// Appends the framed hard-state record to `out`.
pub(crate) fn encode_hard_state(hs: &HardState, out: &mut Vec<u8>) {
    let start = begin_frame(out);
    out.push(KIND_HARD_STATE);
    out.extend_from_slice(&hs.term.to_le_bytes());
    out.extend_from_slice(&hs.vote.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&hs.commit.to_le_bytes());
    end_frame(out, start);
}

/// Appends the framed entry record to `out`. The caller keeps the data within
/// [`MAX_ENTRY_DATA_BYTES`] (checked before anything is written).
pub(crate) fn encode_entry(entry: &Entry, out: &mut Vec<u8>) {
    assert!(
        entry.data.len() <= MAX_ENTRY_DATA_BYTES,
        "caller checks the size"
    );
    let start = begin_frame(out);
    out.push(KIND_ENTRY);
    out.extend_from_slice(&entry.term.to_le_bytes());
    out.extend_from_slice(&entry.index.to_le_bytes());
    out.push(match entry.kind {
        EntryKind::Noop => 0,
        EntryKind::Command => 1,
        EntryKind::Config => 2,
    });
    out.extend_from_slice(&(entry.data.len() as u32).to_le_bytes());
    out.extend_from_slice(&entry.data);
    end_frame(out, start);
}

/// Reserves the header; [`end_frame`] fills it once the payload is known.
fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    start
}

fn end_frame(out: &mut [u8], start: usize) {
    let payload = &out[start + HEADER_BYTES..];
    let len = payload.len() as u32;
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&MAGIC.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// The outcome of reading a log from its start.
#[derive(Debug)]
pub(crate) struct Scan {
    /// The intact records in order, each with its offset in the file.
    pub records: Vec<(u64, Record)>,
    /// The end of the last intact record: where a torn tail is cut.
    pub valid_len: u64,
    /// The first record that failed, if any: its offset and why.
    pub failure: Option<(u64, String)>,
}

/// Reads records from the start of `bytes` until the end or the first failure.
pub(crate) fn scan(bytes: &[u8]) -> Scan {
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let decoded = frame_at(bytes, offset).and_then(|payload| {
            let record = decode_payload(payload)?;
            Ok((record, HEADER_BYTES + payload.len()))
        });
        match decoded {
            Ok((record, len)) => {
                records.push((offset as u64, record));
                offset += len;
            }
            Err(reason) => {
                return Scan {
                    records,
                    valid_len: offset as u64,
                    failure: Some((offset as u64, reason)),
                };
            }
        }
    }
    Scan {
        records,
        valid_len: offset as u64,
        failure: None,
    }
}

/// True when an intact frame starts at `offset`, whether or not its payload decodes:
/// a torn write cannot produce one, so such a frame is never a torn tail.
pub(crate) fn valid_frame_at(bytes: &[u8], offset: u64) -> bool {
    usize::try_from(offset).is_ok_and(|at| at < bytes.len() && frame_at(bytes, at).is_ok())
}

/// The offset of the first intact frame (magic, sane length, matching CRC) that
/// starts after `offset`, if any.
pub(crate) fn valid_frame_after(bytes: &[u8], offset: u64) -> Option<u64> {
    let start = usize::try_from(offset).ok()?.checked_add(1)?;
    (start..bytes.len())
        .map(|at| at as u64)
        .find(|&at| valid_frame_at(bytes, at))
}

/// The payload of the frame at `offset`, checked against its length and CRC.
fn frame_at(bytes: &[u8], offset: usize) -> Result<&[u8], String> {
    let rest = &bytes[offset..];
    if rest.len() < HEADER_BYTES {
        return Err(format!("truncated record header ({} bytes)", rest.len()));
    }
    if read_u32(rest, 0) != MAGIC {
        return Err("bad magic".to_string());
    }
    let len = read_u32(rest, 4) as usize;
    if len > MAX_PAYLOAD_BYTES {
        return Err(format!(
            "record length {len} exceeds the {MAX_PAYLOAD_BYTES}-byte limit"
        ));
    }
    let Some(payload) = rest.get(HEADER_BYTES..HEADER_BYTES + len) else {
        return Err(format!(
            "truncated record ({} of {len} payload bytes)",
            rest.len() - HEADER_BYTES
        ));
    };
    if crc32fast::hash(payload) != read_u32(rest, 8) {
        return Err("bad crc".to_string());
    }
    Ok(payload)
}

fn decode_payload(payload: &[u8]) -> Result<Record, String> {
    let mut r = Reader { bytes: payload };
    let record = match r.u8()? {
        KIND_HARD_STATE => {
            let term = r.u64()?;
            let vote = r.u64()?;
            let commit = r.u64()?;
            Record::HardState(HardState {
                term,
                vote: (vote != 0).then_some(vote),
                commit,
            })
        }
        KIND_ENTRY => {
            let term = r.u64()?;
            let index = r.u64()?;
            let kind = match r.u8()? {
                0 => EntryKind::Noop,
                1 => EntryKind::Command,
                2 => EntryKind::Config,
                other => return Err(format!("unknown entry kind {other}")),
            };
            let len = r.u32()? as usize;
            let data = r.take(len)?.to_vec();
            Record::Entry(Entry {
                term,
                index,
                kind,
                data,
            })
        }
        other => return Err(format!("unknown record kind {other}")),
    };
    if !r.bytes.is_empty() {
        return Err(format!(
            "{} unexpected bytes after the record",
            r.bytes.len()
        ));
    }
    Ok(record)
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

/// Takes fixed-size fields off the front of a payload, failing instead of panicking
/// when the payload is shorter than its kind says.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err(format!(
                "payload too short ({} bytes left, {n} needed)",
                self.bytes.len()
            ));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(read_u32(self.take(4)?, 0))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut word = [0; 8];
        word.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(word))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, data: &[u8]) -> Entry {
        Entry {
            term: 3,
            index,
            kind: EntryKind::Command,
            data: data.to_vec(),
        }
    }

    #[test]
    fn records_round_trip_with_their_offsets() {
        let hs = HardState {
            term: 7,
            vote: Some(2),
            commit: 5,
        };
        let mut bytes = Vec::new();
        encode_hard_state(&hs, &mut bytes);
        encode_entry(&entry(1, b"abc"), &mut bytes);
        encode_hard_state(&HardState::default(), &mut bytes);
        encode_entry(&entry(2, b""), &mut bytes);
        let scan = scan(&bytes);
        assert!(scan.failure.is_none());
        assert_eq!(scan.valid_len, bytes.len() as u64);
        let got: Vec<Record> = scan.records.into_iter().map(|(_, r)| r).collect();
        let want = vec![
            Record::HardState(hs),
            Record::Entry(entry(1, b"abc")),
            Record::HardState(HardState::default()),
            Record::Entry(entry(2, b"")),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn huge_length_prefix_is_refused_without_allocating() {
        let mut bytes = Vec::new();
        encode_entry(&entry(1, b"x"), &mut bytes);
        bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let scan = scan(&bytes);
        let (offset, reason) = scan.failure.expect("fails");
        assert_eq!(offset, 0);
        assert!(reason.contains("exceeds"), "{reason}");
    }

    #[test]
    fn intact_frame_after_damage_is_found() {
        let mut bytes = Vec::new();
        encode_entry(&entry(1, b"first"), &mut bytes);
        let second = bytes.len() as u64;
        encode_entry(&entry(2, b"second"), &mut bytes);
        bytes[14] ^= 0xFF;
        let scan = scan(&bytes);
        assert_eq!(scan.failure.expect("fails").1, "bad crc");
        assert_eq!(valid_frame_after(&bytes, 0), Some(second));
        assert_eq!(valid_frame_after(&bytes, second), None);
    }

    #[test]
    fn intact_frame_with_a_short_payload_is_refused() {
        let mut payload_only = vec![KIND_ENTRY, 1, 2];
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&MAGIC.to_le_bytes());
        bytes.extend_from_slice(&(payload_only.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload_only).to_le_bytes());
        bytes.append(&mut payload_only);
        let reason = scan(&bytes).failure.expect("fails").1;
        assert!(reason.contains("too short"), "{reason}");
        assert!(valid_frame_at(&bytes, 0), "the frame itself is intact");
    }
}
