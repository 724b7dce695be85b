//! The receive checks of `udp.rs` against a million hostile datagrams.
//!
//! Each input is one of: random bytes; an authentic datagram mutated after it
//! was signed; mutated bytes signed anew with the cluster key (so the decoder
//! itself meets hostile bytes, as it would from a node whose key leaked or
//! from a bug in a peer); an authentic datagram sent a second time; one signed
//! with another key; one from outside nodes.txt. Every input must be admitted
//! or dropped with its reason, never panic, and each kind must end as it must:
//! a tampered frame is `auth`, a second copy `replay`, a foreign source
//! `unknown_source`. `RAFTLB_DATAGRAM_FUZZ` sets the count (default 1,000,000).

use std::net::SocketAddr;

use super::*;
use crate::auth::{Auth, Key, Keys, KEY_BYTES};
use crate::nodes::Nodes;
use crate::raft::{AppendResult, Entry, EntryKind, Message, MessageBody, SnapshotMeta};
use crate::report::Report;
use crate::runtime::shared::SharedSettings;
use crate::table::LoadTable;

const DEFAULT_INPUTS: usize = 1_000_000;

/// splitmix64: a seeded, dependency-free source of test randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Node A receiving; B and C send (ids derived from their names).
fn receiver(key: &Keys) -> (Shared, SocketAddr) {
    let nodes = Nodes::parse(
        "A 127.0.0.1:40001\nB 127.0.0.1:40002\nC 127.0.0.1:40003\n",
        "test",
    )
    .expect("valid nodes");
    let shared = Shared::new(
        SharedSettings {
            me: a(),
            nodes,
            max_n: 100,
            auth: Auth::Keyed(key.clone()),
            epoch: 1,
        },
        LoadTable::new(),
    );
    (shared, "127.0.0.1:40002".parse().expect("address"))
}

fn a() -> u64 {
    crate::nodes::node_id("A")
}

fn b() -> u64 {
    crate::nodes::node_id("B")
}

/// One datagram of each kind B may send A, as the bytes a frame carries.
fn payloads() -> Vec<Vec<u8>> {
    let raft = |body| {
        Datagram::Raft(Message {
            from: b(),
            incarnation: 1,
            to: a(),
            term: 7,
            body,
        })
    };
    let entry = |i| Entry {
        term: 7,
        index: i,
        kind: EntryKind::Command,
        data: vec![b'x'; 40],
    };
    let datagrams = [
        raft(MessageBody::Heartbeat {
            commit: 3,
            read_seq: 9,
        }),
        raft(MessageBody::AppendEntries {
            prev_log_index: 2,
            prev_log_term: 6,
            entries: vec![entry(3), entry(4)],
            leader_commit: 2,
        }),
        raft(MessageBody::AppendEntriesResponse {
            result: AppendResult::Accepted { match_index: 4 },
        }),
        raft(MessageBody::RequestVote {
            pre_vote: true,
            last_log_index: 4,
            last_log_term: 7,
            transfer: false,
            bound: Some(3),
        }),
        raft(MessageBody::InstallSnapshot {
            membership: None,
            meta: SnapshotMeta { index: 9, term: 7 },
            offset: 0,
            total_len: 16,
            chunk: vec![1; 16],
        }),
        Datagram::Reports {
            from: b(),
            reports: vec![Report {
                server: "s1".into(),
                url: "http://127.0.0.1:9".into(),
                cpu: 5.0,
                wait: 1.0,
                seq: 3,
            }],
        },
        Datagram::ProposeNote {
            from: b(),
            term: 7,
            request: 1,
            text: "a note".into(),
        },
        Datagram::ForgetServer {
            from: b(),
            server: "s1".into(),
        },
    ];
    datagrams
        .iter()
        .map(|d| wire::encode_datagram(d).expect("a sample datagram encodes"))
        .collect()
}

/// Flips, cuts, inserts or overwrites a few bytes of `bytes`.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        match rng.below(5) {
            0 if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                bytes[i] ^= 1 << rng.below(8);
            }
            1 if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                bytes[i] = rng.next() as u8;
            }
            2 => {
                let cut = rng.below(bytes.len() + 1);
                bytes.truncate(cut);
            }
            3 => {
                let i = rng.below(bytes.len() + 1);
                bytes.insert(i, rng.next() as u8);
            }
            _ => {
                // A hostile length or count: eight bytes of 0xff somewhere.
                let i = rng.below(bytes.len() + 1);
                bytes.splice(i..i, [0xff; 8]);
            }
        }
    }
}

#[test]
fn a_million_hostile_datagrams_are_admitted_or_dropped_by_reason_never_a_panic() {
    let inputs = std::env::var("RAFTLB_DATAGRAM_FUZZ")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_INPUTS);
    let key = Keys::new(Key::from_bytes([3; KEY_BYTES]), None);
    let wrong = Auth::Keyed(Keys::new(Key::from_bytes([4; KEY_BYTES]), None));
    let auth = Auth::Keyed(key.clone());
    let (shared, from_b) = receiver(&key);
    let stranger: SocketAddr = "127.0.0.2:40002".parse().expect("address");
    let samples = payloads();
    let mut windows = Windows::default();
    let mut rng = Rng(0x5eed_da7a);
    let mut counter = 0u64;
    let mut next_header = || {
        counter += 1;
        Header { epoch: 5, counter }
    };
    // admitted, unknown_source, auth, replay, decode
    let mut tally = [0usize; 5];
    let mut last_authentic: Option<Vec<u8>> = None;
    let mut checked = 0;
    // A draw that makes no input (nothing to replay yet, a mutation that
    // changed nothing) is drawn again; 3x bounds the loop all the same.
    for i in 0..3 * inputs {
        if checked == inputs {
            break;
        }
        let sample = &samples[rng.below(samples.len())];
        let kind = rng.below(6);
        let (source, bytes) = match kind {
            0 => {
                let len = if rng.below(100) == 0 {
                    wire::MAX_DATAGRAM_BYTES + rng.below(2)
                } else {
                    rng.below(160)
                };
                (from_b, (0..len).map(|_| rng.next() as u8).collect())
            }
            1 => {
                let mut bytes = frame::seal(&auth, b(), a(), next_header(), sample);
                let before = bytes.clone();
                mutate(&mut rng, &mut bytes);
                if bytes == before {
                    continue;
                }
                (from_b, bytes)
            }
            2 => {
                // Half signed as they are (admitted), half mutated first (the
                // ids are 9-byte varints, so most mutants then fail the
                // sender check or the decoder).
                let mut payload = sample.clone();
                if rng.below(2) == 0 {
                    mutate(&mut rng, &mut payload);
                }
                (
                    from_b,
                    frame::seal(&auth, b(), a(), next_header(), &payload),
                )
            }
            3 => match last_authentic.take() {
                Some(bytes) => (from_b, bytes),
                None => continue,
            },
            4 => (from_b, frame::seal(&wrong, b(), a(), next_header(), sample)),
            _ => (
                stranger,
                frame::seal(&auth, b(), a(), next_header(), sample),
            ),
        };
        checked += 1;
        let outcome = check(&shared, &mut windows, source, &bytes);
        let slot = match &outcome {
            Ok(_) => 0,
            Err(Dropped::UnknownSource) => 1,
            Err(Dropped::Auth(_)) => 2,
            Err(Dropped::Replay(_)) => 3,
            Err(Dropped::Decode(_)) => 4,
        };
        tally[slot] += 1;
        let expected: &[usize] = match kind {
            // Random bytes never carry the key's tag.
            0 | 1 | 4 => &[2],
            // Signed anew: the decoder decides (a mutation may keep it valid).
            2 => &[0, 4],
            3 => &[3],
            _ => &[1],
        };
        assert!(
            expected.contains(&slot),
            "input {i} of kind {kind} ended as {outcome:?}"
        );
        if kind == 2 && rng.below(4) == 0 {
            last_authentic = Some(bytes);
        }
    }
    assert_eq!(checked, inputs, "the draws made too few inputs");
    eprintln!(
        "{inputs} datagrams: admitted {}, unknown source {}, auth {}, replay {}, decode {}",
        tally[0], tally[1], tally[2], tally[3], tally[4]
    );
    // Every path was taken, many times.
    assert!(tally.iter().all(|n| *n > inputs / 100), "{tally:?}");
}
