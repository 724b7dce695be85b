//! A linearizability checker for one register: the replicated note.
//!
//! A test records what its clients saw (each operation with the time it was
//! invoked and the time its answer came back) and asks whether some order of the
//! operations explains every answer: a sequential register in that order gives the
//! same read results, and an operation that returned before another was invoked
//! comes first in it. If there is such an order, the note behaved as one register
//! would (linearizability, Herlihy and Wing 1990).
//!
//! The search is Wing and Gong's, as improved by Lowe ("Testing for
//! linearizability", 2017): the operations' call and return events sit in one
//! list ordered by time; the search repeatedly takes an operation whose call comes
//! before the first return still in the list, applies it to the register, and
//! lifts both its events out. Meeting a return means that operation was not put in
//! order before it returned, so the search backtracks. Lowe's memo of every
//! (set of ordered operations, register value) already explored cuts the search
//! from exponential to about linear on the histories a real system produces.
//! Two register-specific touches keep it there (see `search.rs`): a read that
//! fits the register's value is taken without trying alternatives, and writes
//! are tried in the order the open reads make likely.
//!
//! A write whose outcome is unknown (a timeout, a 503) may have taken effect at
//! any time after it was invoked, or never. Such a write is left out when no read
//! returned its value (it cannot explain anything); made an ordinary operation due
//! by the last read of its value when it alone wrote that value (that read needs
//! it); and otherwise kept optional: the search may place it or not.

use std::collections::HashMap;

pub use lost::lost_writes;
use search::{Search, Stuck};

/// Search steps before [`check_register`] gives up rather than run for hours.
pub(crate) const MAX_STEPS: u64 = 10_000_000;

/// What one operation on the register did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Set the register to this value.
    Write(String),
    /// Read the register; the value it returned.
    Read(String),
}

/// One operation as a client saw it, times in nanoseconds from one shared origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// Who issued it, for the explanation only.
    pub client: usize,
    pub kind: OpKind,
    /// Taken before the request was sent.
    pub invoked_ns: u64,
    /// Taken after the whole answer arrived; None when the outcome is unknown (a
    /// write that timed out or got a 503: it may take effect at any later time,
    /// or never). A read with an unknown outcome proves nothing and is ignored.
    pub returned_ns: Option<u64>,
}

/// The answer of a finished check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some order explains every answer; `ops` operations were in the history.
    Linearizable { ops: usize },
    /// No order does; the explanation names where every order got stuck.
    NotLinearizable { explanation: String },
}

/// Why a history could not be judged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckError {
    /// Operation `op` (of `client`) returned before it was invoked.
    ReturnBeforeCall { op: usize, client: usize },
    /// The search took more than `steps` steps on `ops` operations.
    GaveUp { steps: u64, ops: usize },
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckError::ReturnBeforeCall { op, client } => write!(
                f,
                "operation {op} (client {client}) returned before it was invoked"
            ),
            CheckError::GaveUp { steps, ops } => write!(
                f,
                "gave up after {steps} search steps on {ops} operations: too many orders to try"
            ),
        }
    }
}

impl std::error::Error for CheckError {}

/// Checks `history` against a register that starts as `initial`. Errs when the
/// history is malformed (a return before its call) or the search takes more than
/// `MAX_STEPS` steps.
pub fn check_register(initial: &str, history: &[Op]) -> Result<Verdict, CheckError> {
    check_register_within(initial, history, MAX_STEPS)
}

/// [`check_register`] with a chosen step limit.
pub(crate) fn check_register_within(
    initial: &str,
    history: &[Op],
    max_steps: u64,
) -> Result<Verdict, CheckError> {
    search(initial, history, max_steps).map(|(verdict, _steps)| verdict)
}

/// The verdict and the steps it took: tests assert that the search stays near
/// linear on realistic histories without asserting on time.
fn search(initial: &str, history: &[Op], max_steps: u64) -> Result<(Verdict, u64), CheckError> {
    let (tasks, values) = prepare(initial, history)?;
    let mut search = Search::new(tasks);
    let steps = search.run(max_steps).map_err(|steps| CheckError::GaveUp {
        steps,
        ops: history.len(),
    })?;
    let verdict = match &search.stuck {
        Some(stuck) if search.remaining > 0 => Verdict::NotLinearizable {
            explanation: explain(stuck, &search, history, &values),
        },
        _ => Verdict::Linearizable { ops: history.len() },
    };
    Ok((verdict, steps))
}

/// An operation as the search sees it: its value interned, its kind decided.
#[derive(Clone, Debug)]
struct Task {
    /// Index in the caller's history, for the explanation.
    op: usize,
    write: bool,
    value: u32,
    invoked_ns: u64,
    /// Completed operations (and unknown writes that a read needs) must be put in
    /// order; optional ones are unknown writes the search may leave out.
    required: bool,
    /// The time it must take effect before: its return, or for an unknown write
    /// the last return of a read of its value (later, it could explain nothing).
    deadline_ns: u64,
}

/// Turns the history into tasks sorted by invocation (so the set of ordered
/// tasks is mostly a prefix, which keeps memo keys short), and the value table
/// (index 0 is `initial`).
fn prepare(initial: &str, history: &[Op]) -> Result<(Vec<Task>, Vec<String>), CheckError> {
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let mut values: Vec<String> = Vec::new();
    let mut intern = |v| intern(&mut ids, &mut values, v);
    intern(initial);
    let mut interned = Vec::with_capacity(history.len());
    for (i, op) in history.iter().enumerate() {
        if op.returned_ns.is_some_and(|r| r < op.invoked_ns) {
            return Err(CheckError::ReturnBeforeCall {
                op: i,
                client: op.client,
            });
        }
        interned.push(match &op.kind {
            OpKind::Write(v) | OpKind::Read(v) => intern(v),
        });
    }
    let value_count = values.len();
    // Per value: how many writes wrote it, and when its last read returned.
    let mut writers = vec![0usize; value_count];
    let mut last_read_ns: Vec<Option<u64>> = vec![None; value_count];
    for (op, &value) in history.iter().zip(&interned) {
        let v = value as usize;
        match (&op.kind, op.returned_ns) {
            (OpKind::Write(_), _) => writers[v] += 1,
            (OpKind::Read(_), Some(r)) => last_read_ns[v] = last_read_ns[v].max(Some(r)),
            (OpKind::Read(_), None) => {}
        }
    }
    let mut tasks = Vec::with_capacity(history.len());
    for (i, (op, &value)) in history.iter().zip(&interned).enumerate() {
        let write = matches!(op.kind, OpKind::Write(_));
        let (required, deadline_ns) = match (write, op.returned_ns) {
            (_, Some(returned)) => (true, returned),
            (false, None) => continue,
            (true, None) => match last_read_ns[value as usize] {
                Some(last) if last >= op.invoked_ns => {
                    (value != 0 && writers[value as usize] == 1, last)
                }
                _ => continue,
            },
        };
        tasks.push(Task {
            op: i,
            write,
            value,
            invoked_ns: op.invoked_ns,
            required,
            deadline_ns,
        });
    }
    tasks.sort_by_key(|t| (t.invoked_ns, t.op));
    Ok((tasks, values))
}

/// The id of `value`, numbered in order of first appearance.
fn intern<'h>(ids: &mut HashMap<&'h str, u32>, values: &mut Vec<String>, value: &'h str) -> u32 {
    *ids.entry(value).or_insert_with(|| {
        values.push(value.to_string());
        u32::try_from(values.len() - 1).expect("fewer than 2^32 values")
    })
}

/// A reader's account of the deepest stuck point.
fn explain(stuck: &Stuck, search: &Search, history: &[Op], values: &[String]) -> String {
    let describe = |t: u32| describe(&history[search.tasks[t as usize].op]);
    let mut text = format!(
        "no order of the operations explains every answer: at most {} of the {} \
         operations that must take effect could be ordered.\n",
        stuck.ordered, search.required
    );
    if stuck.tail.is_empty() {
        text += "The order found was empty";
    } else {
        text += "The longest order found ended with:\n";
        for &t in &stuck.tail {
            text += &format!("  {}\n", describe(t));
        }
        text += "after which";
    }
    text += &format!(
        " the register held {}. Then\n  {}\nhad to take effect before it returned, \
         and no order of the operations open then allowed it:\n",
        shown(&values[stuck.value as usize]),
        describe(stuck.blocked)
    );
    for &t in &stuck.open {
        let task = &search.tasks[t as usize];
        let why = if !task.write && task.value != stuck.value {
            " (the register did not hold that)"
        } else {
            ""
        };
        text += &format!("  {}{why}\n", describe(t));
    }
    text
}

/// "client 3 read "c1-7" [1.200000 s .. 1.250000 s]"
fn describe(op: &Op) -> String {
    let (verb, value) = match &op.kind {
        OpKind::Write(v) => ("write", v),
        OpKind::Read(v) => ("read", v),
    };
    let returned = op
        .returned_ns
        .map_or_else(|| "unknown".to_string(), seconds);
    format!(
        "client {} {verb} {} [{} .. {returned}]",
        op.client,
        shown(value),
        seconds(op.invoked_ns)
    )
}

fn seconds(ns: u64) -> String {
    format!("{}.{:06} s", ns / 1_000_000_000, ns % 1_000_000_000 / 1_000)
}

/// A value quoted, cut to a readable length (a note can be 32 KiB).
fn shown(value: &str) -> String {
    const SHOWN_CHARS: usize = 40;
    if value.chars().count() <= SHOWN_CHARS {
        format!("{value:?}")
    } else {
        let cut: String = value.chars().take(SHOWN_CHARS).collect();
        format!("{cut:?}...")
    }
}

mod lost;
mod search;
#[cfg(test)]
mod tests;
