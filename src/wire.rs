//! The wire: every bincode encode and decode of raftlb lives here, so the codec
//! can be swapped in one place.
//!
//! Three things are encoded: datagrams between nodes (a Raft message, or load
//! reports a follower forwards to the leader), state-machine commands (the data of
//! a log entry) and state-machine snapshots. Decoding is given a byte limit, so a
//! corrupt or hostile length prefix cannot make it allocate more than the input
//! could hold, and trailing bytes are refused: a datagram is exactly one value.

use std::fmt;

use bincode::config::{Config, Configuration, Limit};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::raft::Message;
use crate::report::Report;

/// The largest datagram raftlb sends or accepts (SPEC: never more than 60 KB),
/// its frame (epoch, counter, tag: `crate::auth::frame`) included.
pub(crate) const MAX_DATAGRAM_BYTES: usize = 60_000;

/// The largest encoded [`Datagram`]: what a frame leaves of a datagram. The
/// runtime gives the core this as its `max_message_bytes`.
pub(crate) const MAX_PAYLOAD_BYTES: usize = MAX_DATAGRAM_BYTES - crate::auth::frame::OVERHEAD_BYTES;

/// Decoding never allocates past this, whatever a length prefix claims: the
/// largest value we decode is a snapshot, itself bounded by the storage layer.
const MAX_DECODE_BYTES: usize = 64 * 1024 * 1024;

/// What one node sends another in one UDP datagram.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Datagram {
    /// A Raft message for the core.
    Raft(Message),
    /// Load reports a follower received, forwarded to the leader so that a
    /// daemon that reaches only a follower still gets its reports committed.
    Reports { from: u64, reports: Vec<Report> },
    /// A note write a follower's client asked for, forwarded to the leader to
    /// propose, but only in `term`: the follower then knows that an applied
    /// entry of a later term means its write can no longer commit. New variants
    /// go last: the position is the tag on the wire.
    ProposeNote {
        from: u64,
        term: u64,
        request: u64,
        text: String,
    },
    /// The leader did not propose `request` (not leader, another term, handing
    /// over): it certainly did not happen, and the follower may send it again.
    NoteRefused { from: u64, request: u64 },
    /// A request to forget `server` that a follower's client made, for the
    /// leader to propose (`table::Command::Forget`). Forgetting is idempotent,
    /// so the follower simply sends it again until it applies a `Forget` of
    /// that server or its deadline passes.
    ForgetServer { from: u64, server: String },
    /// The nodes of the sender's address book (its configuration's members
    /// and nodes.txt's), as (name, address), sent to a node that asked for
    /// votes while the sender knows a leader. A
    /// node back from a long absence may lack the address of a member added
    /// meanwhile (the leader itself, perhaps): it drops that member's
    /// datagrams (`runtime::udp` admits only the address book's sources) and
    /// would never hear the leader whose log would tell it the new members.
    Members {
        from: u64,
        members: Vec<(String, String)>,
    },
}

/// Why bytes could not be turned into a value, or a value into a datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum WireError {
    /// The bytes are not a valid encoding (or hit the decode limit).
    Decode(String),
    /// The bytes decoded, with bytes left over.
    Trailing { used: usize, len: usize },
    /// The encoded value is larger than a datagram may be.
    TooLarge { len: usize, limit: usize },
    /// The value could not be encoded (a serde error; not expected for our types).
    Encode(String),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Decode(reason) => write!(f, "cannot decode: {reason}"),
            WireError::Trailing { used, len } => {
                write!(
                    f,
                    "cannot decode: {} trailing bytes after {used}",
                    len - used
                )
            }
            WireError::TooLarge { len, limit } => {
                write!(f, "encoded size {len} bytes exceeds the limit of {limit}")
            }
            WireError::Encode(reason) => write!(f, "cannot encode: {reason}"),
        }
    }
}

impl std::error::Error for WireError {}

fn config(
) -> Configuration<bincode::config::LittleEndian, bincode::config::Varint, Limit<MAX_DECODE_BYTES>>
{
    bincode::config::standard().with_limit::<MAX_DECODE_BYTES>()
}

/// Encodes any value of ours (commands, snapshots).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| WireError::Encode(e.to_string()))
}

/// Decodes exactly one value from `bytes`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    decode_with(bytes, config())
}

fn decode_with<T: DeserializeOwned, C: Config>(bytes: &[u8], config: C) -> Result<T, WireError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config)
        .map_err(|e| WireError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(WireError::Trailing {
            used,
            len: bytes.len(),
        });
    }
    Ok(value)
}

/// Encodes a datagram, refusing one larger than `MAX_PAYLOAD_BYTES`.
pub fn encode_datagram(datagram: &Datagram) -> Result<Vec<u8>, WireError> {
    let bytes = encode(datagram)?;
    if bytes.len() > MAX_PAYLOAD_BYTES {
        return Err(WireError::TooLarge {
            len: bytes.len(),
            limit: MAX_PAYLOAD_BYTES,
        });
    }
    Ok(bytes)
}

/// Decodes a received datagram's payload (its frame already checked and
/// removed). The limit is the payload size itself: no length prefix inside it
/// can ask for more than it carries.
pub(crate) fn decode_datagram(bytes: &[u8]) -> Result<Datagram, WireError> {
    if bytes.len() > MAX_PAYLOAD_BYTES {
        return Err(WireError::TooLarge {
            len: bytes.len(),
            limit: MAX_PAYLOAD_BYTES,
        });
    }
    decode_with(
        bytes,
        bincode::config::standard().with_limit::<MAX_PAYLOAD_BYTES>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Config as RaftConfig, Entry, EntryKind, MessageBody, SnapshotMeta};

    fn append_of(entries: Vec<Entry>) -> Datagram {
        Datagram::Raft(Message {
            from: 1,
            incarnation: 1,
            to: 2,
            term: u64::MAX / 2 - 1,
            body: MessageBody::AppendEntries {
                prev_log_index: u64::MAX / 2 - 1,
                prev_log_term: u64::MAX / 2 - 1,
                entries,
                leader_commit: u64::MAX / 2 - 1,
            },
        })
    }

    #[test]
    fn the_largest_forwarded_note_fits_a_datagram() {
        let text = "é".repeat(crate::table::MAX_NOTE_BYTES / 2);
        let d = Datagram::ProposeNote {
            from: u64::MAX,
            term: u64::MAX,
            request: u64::MAX,
            text,
        };
        let bytes = encode_datagram(&d).expect("fits");
        assert_eq!(decode_datagram(&bytes).expect("decodes"), d);
    }

    #[test]
    fn a_message_round_trips() {
        let entry = Entry {
            term: 3,
            index: 9,
            kind: EntryKind::Command,
            data: b"hello".to_vec(),
        };
        let d = append_of(vec![entry]);
        let bytes = encode_datagram(&d).expect("fits");
        assert_eq!(decode_datagram(&bytes).expect("decodes"), d);
    }

    /// The core cuts batches with `Entry::size_bound` and `MESSAGE_OVERHEAD_BYTES`
    /// without knowing the codec; this checks that its worst case really fits: a
    /// batch filled to the core's bound (with `max_message_bytes` as the runtime
    /// sets it, leaving room for the frame), with the largest terms and indexes.
    #[test]
    fn a_batch_cut_by_the_core_bound_encodes_under_the_datagram_limit() {
        let mut config = RaftConfig::new(1, vec![1, 2, 3]);
        config.max_message_bytes = MAX_PAYLOAD_BYTES;
        config
            .validate()
            .expect("the runtime's limit is a valid setting");
        const { assert!(MAX_PAYLOAD_BYTES + crate::auth::frame::OVERHEAD_BYTES <= MAX_DATAGRAM_BYTES) };
        for data_len in [0usize, 1, 100, 1000, config.max_entry_data_bytes()] {
            let mut entries = Vec::new();
            let mut budget = config.max_message_bytes - crate::raft::MESSAGE_OVERHEAD_BYTES;
            loop {
                let e = Entry {
                    term: u64::MAX / 2 - 1,
                    index: u64::MAX / 2 - 1,
                    kind: EntryKind::Command,
                    data: vec![0xff; data_len],
                };
                if e.size_bound() > budget {
                    break;
                }
                budget -= e.size_bound();
                entries.push(e);
            }
            let len = encode_datagram(&append_of(entries)).expect("fits").len();
            assert!(
                len <= MAX_PAYLOAD_BYTES,
                "{len} bytes for {data_len}-byte entries"
            );
        }
        let chunk = Datagram::Raft(Message {
            from: 1,
            incarnation: 1,
            to: 2,
            term: u64::MAX / 2 - 1,
            body: MessageBody::InstallSnapshot {
                membership: Some(
                    crate::raft::Membership::new(
                        (0..crate::raft::MAX_MEMBERS as u64)
                            .map(|id| crate::raft::Member {
                                id: u64::MAX - id,
                                name: "n".repeat(crate::raft::MAX_LABEL_BYTES - 2)
                                    + &format!("{id:02}"),
                                addr: "a".repeat(crate::raft::MAX_LABEL_BYTES),
                                voter: true,
                                incarnation: u64::MAX,
                            })
                            .collect(),
                    )
                    .expect("the largest configuration"),
                ),
                meta: SnapshotMeta {
                    index: u64::MAX / 2 - 1,
                    term: u64::MAX / 2 - 1,
                },
                offset: u64::MAX / 2 - 1,
                total_len: u64::MAX / 2 - 1,
                chunk: vec![7; config.snapshot_chunk_bytes],
            },
        });
        encode_datagram(&chunk).expect("a full snapshot chunk fits a datagram");
    }

    #[test]
    fn garbage_and_hostile_lengths_are_errors_not_allocations() {
        // A Raft message whose entry vector claims u64::MAX elements.
        let mut hostile = vec![0u8, 1, 2, 3, 3];
        hostile.extend_from_slice(&[0xff; 9]);
        assert!(decode_datagram(&hostile).is_err());
        assert!(decode_datagram(&[]).is_err());
        assert!(decode_datagram(&[9]).is_err());
        let good = encode_datagram(&append_of(vec![])).expect("fits");
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            decode_datagram(&trailing),
            Err(WireError::Trailing { .. })
        ));
        for cut in 0..good.len() {
            assert!(decode_datagram(&good[..cut]).is_err(), "prefix {cut}");
        }
        let mut rng = crate::raft::Rng::new(7);
        for _ in 0..20_000 {
            let len = rng.range(0, 200) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            let _ = decode_datagram(&bytes);
        }
    }

    #[test]
    fn an_oversized_datagram_is_refused_on_both_sides() {
        let big = append_of(vec![Entry {
            term: 1,
            index: 1,
            kind: EntryKind::Command,
            data: vec![0; MAX_DATAGRAM_BYTES],
        }]);
        assert!(matches!(
            encode_datagram(&big),
            Err(WireError::TooLarge { .. })
        ));
        let bytes = encode(&big).expect("encodes without the datagram check");
        assert!(matches!(
            decode_datagram(&bytes),
            Err(WireError::TooLarge { .. })
        ));
    }
}
