//! Acknowledged writes that the register's final value says were lost.
//!
//! Linearizability judges the answers clients saw during a run; it cannot see a
//! write that was acknowledged and then silently dropped when nobody read the
//! register in between. The final value can: once every client has stopped and
//! the cluster has healed, a read returns some value F. F was written by some
//! write X (values are unique), and every write acknowledged before X could
//! have started was overwritten by X: fine. But an acknowledged write A that
//! began after every possible X had returned must be ordered after X, so a
//! register that ends at F has lost A.

use super::{Op, OpKind};

/// The indices in `history` of the acknowledged writes that a final read of
/// `final_value`, taken after every operation of `history` had returned or been
/// given up, contradicts.
///
/// A write is contradicted when no write of `final_value` could be ordered
/// after it: each such write returned before it was invoked. A write of unknown
/// outcome (a timeout, a 503) may take effect at any time up to the final read,
/// so it can always come last. When no write wrote `final_value` (the initial
/// value, say, or bytes nobody sent), nothing can come after any acknowledged
/// write, and every one of them counts as lost.
pub fn lost_writes(history: &[Op], final_value: &str) -> Vec<usize> {
    let writers: Vec<&Op> = history
        .iter()
        .filter(|op| matches!(&op.kind, OpKind::Write(v) if v == final_value))
        .collect();
    history
        .iter()
        .enumerate()
        .filter(|(_, op)| matches!(op.kind, OpKind::Write(_)))
        .filter_map(|(i, op)| op.returned_ns.map(|_| (i, op)))
        .filter(|(_, acked)| {
            writers.iter().all(|x| {
                !std::ptr::eq(*x, *acked) && x.returned_ns.is_some_and(|r| r < acked.invoked_ns)
            })
        })
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(client: usize, v: &str, invoked_ns: u64, returned_ns: Option<u64>) -> Op {
        Op {
            client,
            kind: OpKind::Write(v.to_string()),
            invoked_ns,
            returned_ns,
        }
    }

    fn read(v: &str, invoked_ns: u64, returned_ns: u64) -> Op {
        Op {
            client: 9,
            kind: OpKind::Read(v.to_string()),
            invoked_ns,
            returned_ns: Some(returned_ns),
        }
    }

    #[test]
    fn the_last_acknowledged_write_as_the_final_value_loses_nothing() {
        let h = vec![write(0, "a", 0, Some(10)), write(1, "b", 20, Some(30))];
        assert!(lost_writes(&h, "b").is_empty());
    }

    #[test]
    fn an_overwritten_value_as_the_final_one_loses_the_later_write() {
        let h = vec![write(0, "a", 0, Some(10)), write(1, "b", 20, Some(30))];
        assert_eq!(lost_writes(&h, "a"), vec![1]);
    }

    #[test]
    fn concurrent_writes_may_end_in_either_order() {
        let h = vec![write(0, "a", 0, Some(30)), write(1, "b", 10, Some(20))];
        assert!(lost_writes(&h, "a").is_empty());
        assert!(lost_writes(&h, "b").is_empty());
    }

    #[test]
    fn an_unknown_write_may_take_effect_last() {
        // "a" timed out at first, then "b" was acknowledged; "a" may still have
        // landed after "b", so a final "a" loses nothing.
        let h = vec![write(0, "a", 0, None), write(1, "b", 20, Some(30))];
        assert!(lost_writes(&h, "a").is_empty());
        // But a final "b" with a later acknowledged "c" lost "c".
        let h = vec![
            write(0, "a", 0, None),
            write(1, "b", 20, Some(30)),
            write(2, "c", 40, Some(50)),
        ];
        assert_eq!(lost_writes(&h, "b"), vec![2]);
    }

    #[test]
    fn a_final_value_nobody_wrote_loses_every_acknowledged_write() {
        let h = vec![
            write(0, "a", 0, Some(10)),
            write(1, "b", 20, None),
            read("a", 11, 12),
        ];
        assert_eq!(lost_writes(&h, "zz"), vec![0]);
        // The initial value after an acknowledged write: that write is lost.
        assert_eq!(lost_writes(&h, ""), vec![0]);
    }

    #[test]
    fn reads_and_unknown_writes_are_never_counted_as_lost() {
        let h = vec![read("", 0, 1), write(0, "a", 2, None)];
        assert!(lost_writes(&h, "").is_empty());
    }
}
