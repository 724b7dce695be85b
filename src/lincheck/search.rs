//! The search for an order (Wing and Gong's, with Lowe's memo): the event list,
//! the stack of choices, and the memo of explored states.

use std::collections::HashSet;

use super::Task;

/// Marks the end of the event list.
const NIL: u32 = u32::MAX;

/// The event list: entry 0 is the head; then one call entry per task and one
/// return entry per required task, in time order (calls first on a tie, so that
/// operations that touch count as concurrent). Lifting an entry out and putting
/// it back in the reverse order are O(1) (Knuth's dancing links).
struct Events {
    next: Vec<u32>,
    prev: Vec<u32>,
    task: Vec<u32>,
    is_call: Vec<bool>,
    /// Per task: its call entry and, if required, its return entry.
    call_of: Vec<u32>,
    return_of: Vec<u32>,
}

impl Events {
    fn new(tasks: &[Task]) -> Events {
        let mut order: Vec<(u64, bool, u32)> = Vec::with_capacity(tasks.len() * 2);
        for (t, task) in tasks.iter().enumerate() {
            let t = u32::try_from(t).expect("fewer than 2^32 tasks");
            order.push((task.invoked_ns, false, t));
            if task.required {
                order.push((task.deadline_ns, true, t));
            }
        }
        order.sort_unstable();
        let len = order.len() + 1;
        let mut events = Events {
            next: (1..=len as u32).collect(),
            prev: (0..len as u32).map(|i| i.wrapping_sub(1)).collect(),
            task: vec![NIL; len],
            is_call: vec![false; len],
            call_of: vec![NIL; tasks.len()],
            return_of: vec![NIL; tasks.len()],
        };
        events.next[len - 1] = NIL;
        for (k, &(_, is_return, t)) in order.iter().enumerate() {
            let entry = k + 1;
            events.task[entry] = t;
            events.is_call[entry] = !is_return;
            if is_return {
                events.return_of[t as usize] = entry as u32;
            } else {
                events.call_of[t as usize] = entry as u32;
            }
        }
        events
    }

    fn first(&self) -> u32 {
        self.next[0]
    }

    fn unlink(&mut self, e: u32) {
        let (p, n) = (self.prev[e as usize], self.next[e as usize]);
        self.next[p as usize] = n;
        if n != NIL {
            self.prev[n as usize] = p;
        }
    }

    /// Undoes `unlink(e)`; valid only in reverse order of the unlinks.
    fn relink(&mut self, e: u32) {
        let (p, n) = (self.prev[e as usize], self.next[e as usize]);
        self.next[p as usize] = e;
        if n != NIL {
            self.prev[n as usize] = e;
        }
    }

    /// Takes a task's call and return out of the list.
    fn lift(&mut self, t: u32) {
        self.unlink(self.call_of[t as usize]);
        if self.return_of[t as usize] != NIL {
            self.unlink(self.return_of[t as usize]);
        }
    }

    fn unlift(&mut self, t: u32) {
        if self.return_of[t as usize] != NIL {
            self.relink(self.return_of[t as usize]);
        }
        self.relink(self.call_of[t as usize]);
    }
}

/// A memo key: the set of ordered tasks and the register's value. The set is
/// stored as its longest full prefix plus the few tasks ordered beyond it: every
/// task ordered out of invocation order overlapped the first one not yet ordered.
#[derive(PartialEq, Eq, Hash)]
struct Key {
    value: u32,
    prefix: u32,
    beyond: Box<[u32]>,
}

/// One point of the search: the choices it has from there, and the one it took.
struct Frame {
    /// Tasks that may go next, in the order to try them.
    choices: Vec<u32>,
    /// Index in `choices` of the next one to try.
    next: usize,
    /// The choice applied now, with what undoing it restores.
    taken: Option<Taken>,
}

/// A task put in the order, with the register's value and the latest
/// invocation from before it.
struct Taken {
    task: u32,
    value: u32,
    max_invoked_ns: u64,
}

/// The deepest point where the search got stuck, for the explanation.
pub(super) struct Stuck {
    /// Required tasks ordered then.
    pub(super) ordered: usize,
    /// The task whose return comes first: it had to take effect next or after
    /// some of the open tasks, and no way worked.
    pub(super) blocked: u32,
    /// What the register held then.
    pub(super) value: u32,
    /// The tasks that were open then (calls before that return).
    pub(super) open: Vec<u32>,
    /// The last few tasks of the order found, oldest first.
    pub(super) tail: Vec<u32>,
}

/// Tasks of the order shown before the point where it got stuck.
const TAIL_SHOWN: usize = 6;

pub(super) struct Search {
    pub(super) tasks: Vec<Task>,
    events: Events,
    /// Bit t set when task t is in the current order.
    ordered: Vec<u64>,
    memo: HashSet<Key>,
    stack: Vec<Frame>,
    /// What the register holds after the current order (an index into the
    /// value table; 0 is the initial value).
    value: u32,
    /// Required tasks in all.
    pub(super) required: usize,
    /// Required tasks not yet ordered: the search succeeds when it reaches 0.
    pub(super) remaining: usize,
    /// Latest invocation among ordered tasks: an optional write whose deadline
    /// comes before it could only come too late (equal times count as
    /// concurrent, as everywhere here).
    max_invoked_ns: u64,
    pub(super) stuck: Option<Stuck>,
}

impl Search {
    pub(super) fn new(tasks: Vec<Task>) -> Search {
        let events = Events::new(&tasks);
        let required = tasks.iter().filter(|t| t.required).count();
        Search {
            ordered: vec![0; tasks.len().div_ceil(64)],
            required,
            remaining: required,
            tasks,
            events,
            memo: HashSet::new(),
            stack: Vec::new(),
            value: 0,
            max_invoked_ns: 0,
            stuck: None,
        }
    }

    /// Runs to an answer: Ok(steps) with `remaining == 0` when an order was
    /// found, `remaining > 0` (and `stuck` set) when none exists; Err(steps) at
    /// the step limit.
    pub(super) fn run(&mut self, max_steps: u64) -> Result<u64, u64> {
        let mut steps = 0u64;
        if self.remaining > 0 {
            let root = self.frame();
            self.stack.push(root);
        }
        while self.remaining > 0 {
            steps += 1;
            if steps > max_steps {
                return Err(max_steps);
            }
            let Some(frame) = self.stack.last_mut() else {
                break;
            };
            if let Some(taken) = frame.taken.take() {
                self.undo(taken);
                continue;
            }
            match frame.choices.get(frame.next).copied() {
                Some(t) => {
                    frame.next += 1;
                    if let Some(taken) = self.apply(t) {
                        self.stack.last_mut().expect("the frame is there").taken = Some(taken);
                        if self.remaining > 0 {
                            let child = self.frame();
                            self.stack.push(child);
                        }
                    }
                }
                None => {
                    self.note_stuck();
                    self.stack.pop();
                }
            }
        }
        Ok(steps)
    }

    /// The choices from the current state, best first. Any task whose call
    /// comes before the first return still in the list may go next. A read of
    /// the value the register holds is taken alone: putting it first loses
    /// nothing, since the tasks that had to precede it are ordered already and
    /// it changes nothing. Other reads cannot go next. The writes are tried in
    /// the order most likely to succeed: the task whose return comes first if
    /// it is a write, or the writes of the value it reads if it is a read; then
    /// the writes whose value another open read returned; then by deadline.
    fn frame(&self) -> Frame {
        let only = |t: u32| Frame {
            choices: vec![t],
            next: 0,
            taken: None,
        };
        let mut writes = Vec::new();
        let mut wanted = HashSet::new();
        let mut e = self.events.first();
        while e != NIL && self.events.is_call[e as usize] {
            let t = self.events.task[e as usize];
            let task = &self.tasks[t as usize];
            e = self.events.next[e as usize];
            if !task.required && task.deadline_ns < self.max_invoked_ns {
                continue;
            }
            if task.write {
                writes.push(t);
            } else if task.value == self.value {
                return only(t);
            } else {
                wanted.insert(task.value);
            }
        }
        assert_ne!(e, NIL, "a required task's return is still in the list");
        let first = self.events.task[e as usize];
        let first_value = self.tasks[first as usize].value;
        writes.sort_by_key(|&t| {
            let task = &self.tasks[t as usize];
            let rank = if t == first || task.value == first_value {
                0
            } else if wanted.contains(&task.value) {
                1
            } else {
                2
            };
            (rank, task.deadline_ns, t)
        });
        Frame {
            choices: writes,
            next: 0,
            taken: None,
        }
    }

    /// Puts task t next in the order unless that state was explored before.
    fn apply(&mut self, t: u32) -> Option<Taken> {
        let task = &self.tasks[t as usize];
        let (next_value, required, invoked_ns) = (task.value, task.required, task.invoked_ns);
        set_bit(&mut self.ordered, t);
        if !self.memo.insert(self.key(next_value)) {
            clear_bit(&mut self.ordered, t);
            return None;
        }
        self.events.lift(t);
        let taken = Taken {
            task: t,
            value: self.value,
            max_invoked_ns: self.max_invoked_ns,
        };
        self.value = next_value;
        self.max_invoked_ns = self.max_invoked_ns.max(invoked_ns);
        self.remaining -= usize::from(required);
        Some(taken)
    }

    fn undo(&mut self, taken: Taken) {
        let t = taken.task;
        self.events.unlift(t);
        clear_bit(&mut self.ordered, t);
        self.value = taken.value;
        self.max_invoked_ns = taken.max_invoked_ns;
        self.remaining += usize::from(self.tasks[t as usize].required);
    }

    fn key(&self, value: u32) -> Key {
        let full_words = self.ordered.iter().take_while(|w| **w == u64::MAX).count();
        let mut prefix = full_words * 64;
        let mut beyond = Vec::new();
        if let Some(&word) = self.ordered.get(full_words) {
            prefix += word.trailing_ones() as usize;
            for (w, &word) in self.ordered.iter().enumerate().skip(full_words) {
                let mut bits = word;
                while bits != 0 {
                    let t = w * 64 + bits.trailing_zeros() as usize;
                    if t > prefix {
                        beyond.push(t as u32);
                    }
                    bits &= bits - 1;
                }
            }
        }
        Key {
            value,
            prefix: prefix as u32,
            beyond: beyond.into_boxed_slice(),
        }
    }

    /// Remembers the deepest point where every choice failed.
    fn note_stuck(&mut self) {
        let ordered = self.required - self.remaining;
        if self.stuck.as_ref().is_some_and(|s| s.ordered >= ordered) {
            return;
        }
        let mut open = Vec::new();
        let mut e = self.events.first();
        while e != NIL && self.events.is_call[e as usize] {
            open.push(self.events.task[e as usize]);
            e = self.events.next[e as usize];
        }
        assert_ne!(e, NIL, "a required task's return is still in the list");
        let mut tail: Vec<u32> = (self.stack.iter().rev())
            .filter_map(|f| f.taken.as_ref().map(|taken| taken.task))
            .take(TAIL_SHOWN)
            .collect();
        tail.reverse();
        self.stuck = Some(Stuck {
            ordered,
            blocked: self.events.task[e as usize],
            value: self.value,
            open,
            tail,
        });
    }
}

fn set_bit(bits: &mut [u64], t: u32) {
    bits[t as usize / 64] |= 1 << (t % 64);
}

fn clear_bit(bits: &mut [u64], t: u32) {
    bits[t as usize / 64] &= !(1 << (t % 64));
}
