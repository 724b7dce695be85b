//! The simulator's state machine: it records every applied command (unique
//! values), refuses to apply one twice or out of order, and folds every applied
//! entry into a hash chain, so two nodes agree on their whole history exactly when
//! their chains agree. Its snapshot carries the values, so snapshots span many
//! chunks.

use std::collections::BTreeSet;

use raftlb::raft::{Entry, EntryKind, Snapshot};

/// FNV-1a over a few words: deterministic across runs and platforms.
pub fn mix(chain: u64, words: &[u64], data: &[u8]) -> u64 {
    let mut h = chain ^ 0xcbf2_9ce4_8422_2325;
    for byte in words
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .chain(data.iter().copied())
    {
        h ^= byte as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// A hash of one entry (its term, index, kind and data).
pub fn entry_hash(entry: &Entry) -> u64 {
    let kind = match entry.kind {
        EntryKind::Noop => 1,
        EntryKind::Command => 2,
        EntryKind::Config => 3,
    };
    mix(0, &[entry.term, entry.index, kind], &entry.data)
}

#[derive(Clone, Debug, Default)]
pub struct Counter {
    pub applied_index: u64,
    pub chain: u64,
    values: Vec<u64>,
    seen: BTreeSet<u64>,
}

impl Counter {
    pub fn apply(&mut self, entry: &Entry) {
        assert_eq!(
            entry.index,
            self.applied_index + 1,
            "entries must be applied in order, without gaps"
        );
        self.applied_index = entry.index;
        self.chain = mix(self.chain, &[entry_hash(entry)], &[]);
        if entry.kind == EntryKind::Command {
            let value = u64::from_le_bytes(
                entry
                    .data
                    .as_slice()
                    .try_into()
                    .expect("sim commands are 8 bytes"),
            );
            assert!(self.seen.insert(value), "value {value} applied twice");
            self.values.push(value);
        }
    }

    pub fn contains(&self, value: u64) -> bool {
        self.seen.contains(&value)
    }

    pub fn snapshot(&self, index: u64) -> Vec<u8> {
        assert_eq!(
            index, self.applied_index,
            "snapshots are taken at the applied index"
        );
        let mut out = Vec::with_capacity(16 + 8 * self.values.len());
        out.extend_from_slice(&self.applied_index.to_le_bytes());
        out.extend_from_slice(&self.chain.to_le_bytes());
        for v in &self.values {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Whether `data` has the shape `snapshot` writes (the applied index, the
    /// chain, then whole values): the check the core runs before installing.
    pub fn decodes(data: &[u8]) -> bool {
        data.len() >= 16 && data.len().is_multiple_of(8)
    }

    pub fn restore(snapshot: Option<&Snapshot>) -> Counter {
        let Some(snapshot) = snapshot else {
            return Counter::default();
        };
        let words: Vec<u64> = snapshot
            .data
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8-byte words")))
            .collect();
        assert!(words.len() >= 2, "snapshot too short");
        assert_eq!(
            words[0], snapshot.meta.index,
            "snapshot data taken at another index"
        );
        let values = words[2..].to_vec();
        Counter {
            applied_index: words[0],
            chain: words[1],
            seen: values.iter().copied().collect(),
            values,
        }
    }

    /// A state machine that only knows where it stands (unchecked runs).
    pub fn skip_to(applied_index: u64) -> Counter {
        Counter {
            applied_index,
            ..Counter::default()
        }
    }

    /// The chain stored in a snapshot's data.
    pub fn chain_of(snapshot: &Snapshot) -> u64 {
        Counter::restore(Some(snapshot)).chain
    }
}
