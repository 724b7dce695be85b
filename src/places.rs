//! A fixed number of places (the worker's computing places), taken first come,
//! first served, each wait bounded by a deadline.
//!
//! A plain mutex, counter and `Condvar::notify_one` is not first come first
//! served: a place given back goes to whichever thread takes the lock first,
//! and a request that just arrived usually beats the waiter the condvar woke,
//! which goes back to waiting. Under load the oldest waiters are passed over
//! again and again, which is the tail latency a balancer in front sees (and
//! the balancing simulator, `tests/balance_sim`, models a worker's queue as
//! first come first served). Here each waiter takes a ticket, and a place
//! given back is handed to the oldest ticket still waiting, so a newcomer
//! queues behind it; only that waiter is woken.
//!
//! [`Line`] is the rule, pure (no lock, no clock); [`Places`] puts it behind a
//! mutex, with waiters parked. The line is as long as the threads waiting in
//! it: a caller bounds those (the worker's HTTP server bounds its
//! connections).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::thread::{self, Thread};
use std::time::Instant;

use crate::locks::lock;

/// A waiter's place in the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket(u64);

/// The rule: `max` places, and those waiting for one, oldest first, each with
/// what wakes it (`W`). A place given back while some wait is handed to the
/// oldest at once (it stays taken): nobody can take it in between.
#[derive(Debug)]
pub struct Line<W> {
    max: usize,
    /// Places held, handed-over ones included.
    taken: usize,
    waiting: VecDeque<(Ticket, W)>,
    /// Waiters handed a place that have not picked it up yet.
    handed: Vec<Ticket>,
    next: u64,
}

impl<W> Line<W> {
    /// `max` places, all free (at least one).
    pub fn new(max: usize) -> Line<W> {
        Line {
            max: max.max(1),
            taken: 0,
            waiting: VecDeque::new(),
            handed: Vec::new(),
            next: 0,
        }
    }

    /// A newcomer: a place at once (`Ok`) when one is free, else a ticket at
    /// the back of the line (`Err`). A place is free only while nobody waits:
    /// one given back goes to the oldest waiter.
    pub fn arrive(&mut self, waker: W) -> Result<(), Ticket> {
        if self.taken < self.max {
            self.taken += 1;
            return Ok(());
        }
        let ticket = Ticket(self.next);
        self.next += 1;
        self.waiting.push_back((ticket, waker));
        Err(ticket)
    }

    /// Whether `ticket` was handed a place; if so it holds it from now on.
    pub fn picked_up(&mut self, ticket: Ticket) -> bool {
        let handed = self.handed.iter().position(|&t| t == ticket);
        handed.map(|at| self.handed.swap_remove(at)).is_some()
    }

    /// `ticket` stops waiting (its deadline passed). True when it was handed
    /// a place meanwhile: it holds that place, to use or give back.
    pub fn leave(&mut self, ticket: Ticket) -> bool {
        if self.picked_up(ticket) {
            return true;
        }
        self.waiting.retain(|(t, _)| *t != ticket);
        false
    }

    /// A place is given back: handed to the oldest waiter, whose waker is
    /// returned to wake it, or freed when nobody waits.
    pub fn release(&mut self) -> Option<W> {
        match self.waiting.pop_front() {
            Some((ticket, waker)) => {
                self.handed.push(ticket);
                Some(waker)
            }
            None => {
                self.taken = self.taken.saturating_sub(1);
                None
            }
        }
    }

    pub fn taken(&self) -> usize {
        self.taken
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

/// [`Line`] shared between threads: a waiter parks, and the thread giving a
/// place back wakes only the one it hands it to.
pub struct Places {
    line: Mutex<Line<Thread>>,
}

impl Places {
    pub fn new(max: usize) -> Places {
        Places {
            line: Mutex::new(Line::new(max)),
        }
    }

    /// Takes a place, waiting in line until `deadline` at the latest; None
    /// if none came to this caller by then.
    pub fn take(&self, deadline: Instant) -> Option<Place<'_>> {
        let ticket = match lock(&self.line).arrive(thread::current()) {
            Ok(()) => return Some(Place(self)),
            Err(ticket) => ticket,
        };
        loop {
            let mut line = lock(&self.line);
            if line.picked_up(ticket) {
                return Some(Place(self));
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                // (Not `then_some(Place(self))`: that builds the place even
                // when none was handed over, and dropping it gives one back.)
                let handed = line.leave(ticket);
                drop(line);
                return handed.then(|| Place(self));
            };
            drop(line);
            // An unpark that came before this park makes it return at once;
            // a wake-up for nothing (another unpark of this thread) loops.
            thread::park_timeout(left);
        }
    }

    /// Places taken and waiters, for a look from outside.
    pub fn counts(&self) -> (usize, usize) {
        let line = lock(&self.line);
        (line.taken(), line.waiting())
    }
}

/// A place, given back when dropped (also when its holder panics).
pub struct Place<'a>(&'a Places);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let next = lock(&self.0.line).release();
        if let Some(waiter) = next {
            waiter.unpark();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_freed_place_goes_to_the_oldest_waiter_not_to_a_newcomer() {
        let mut line = Line::new(1);
        assert_eq!(line.arrive("holder"), Ok(()));
        let first = line.arrive("first").expect_err("the place is taken");
        let second = line.arrive("second").expect_err("the place is taken");
        assert!(!line.picked_up(first), "no place given back yet");
        // Given back: handed to the oldest waiter, whom the caller wakes; a
        // newcomer finds no free place and queues behind the other.
        assert_eq!(line.release(), Some("first"));
        let newcomer = line.arrive("newcomer").expect_err("handed over, not free");
        assert!(!line.picked_up(second) && !line.picked_up(newcomer));
        assert!(line.picked_up(first));
        assert!(!line.picked_up(first), "picked up once");
        assert_eq!(line.release(), Some("second"));
        assert!(line.picked_up(second));
        assert_eq!(line.release(), Some("newcomer"));
        assert!(line.picked_up(newcomer));
        assert_eq!((line.taken(), line.waiting()), (1, 0));
        assert_eq!(line.release(), None);
        assert_eq!((line.taken(), line.waiting()), (0, 0));
    }

    #[test]
    fn a_waiter_that_gives_up_leaves_the_line_or_keeps_a_place_handed_to_it() {
        let mut line = Line::new(2);
        assert_eq!(line.arrive(()), Ok(()));
        assert_eq!(line.arrive(()), Ok(()));
        let gone = line.arrive(()).expect_err("both taken");
        let late = line.arrive(()).expect_err("both taken");
        let next = line.arrive(()).expect_err("both taken");
        assert!(!line.leave(gone), "nothing was handed to it");
        // `late` is handed a place and gives up before it picks it up: it
        // holds it (to give back), so the place is not lost.
        assert_eq!(line.release(), Some(()));
        assert!(line.leave(late));
        assert_eq!(line.release(), Some(()));
        assert!(line.picked_up(next));
        assert_eq!((line.taken(), line.waiting()), (2, 0));
        // Places never go below none, whatever a caller does.
        for _ in 0..3 {
            line.release();
        }
        assert_eq!(line.taken(), 0);
        assert_eq!(line.arrive(()), Ok(()));
    }

    /// Threads: waiters are served in the order they queued, a newcomer with
    /// no time to wait gets nothing while they wait and leaves the line.
    #[test]
    fn threads_are_served_in_the_order_they_queued() {
        let places = Places::new(1);
        let held = places.take(Instant::now()).expect("a free place");
        let (done, order) = mpsc::channel();
        let far = Instant::now() + Duration::from_secs(30);
        std::thread::scope(|scope| {
            for i in 0..4 {
                let (places, done) = (&places, done.clone());
                scope.spawn(move || {
                    let place = places.take(far).expect("a place before the deadline");
                    done.send(i).expect("the test waits for every thread");
                    drop(place);
                });
                // The next one queues only once this one waits.
                for _ in 0..2_000 {
                    if places.counts().1 == i + 1 {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                assert_eq!(places.counts(), (1, i + 1));
            }
            assert!(places.take(Instant::now()).is_none(), "four wait ahead");
            assert_eq!(places.counts(), (1, 4), "the newcomer left the line");
            drop(held);
        });
        let served: Vec<usize> = order.try_iter().collect();
        assert_eq!(served, vec![0, 1, 2, 3]);
        assert_eq!(places.counts(), (0, 0));
    }

    /// Many threads through few places: every one is served, and no place is
    /// lost or made up on the way.
    #[test]
    fn places_are_neither_lost_nor_made_up_under_contention() {
        let places = Places::new(3);
        let far = Instant::now() + Duration::from_secs(30);
        let (most, now) = (Mutex::new(0usize), Mutex::new(0usize));
        std::thread::scope(|scope| {
            for _ in 0..16 {
                scope.spawn(|| {
                    for _ in 0..200 {
                        let place = places.take(far).expect("a place before the deadline");
                        let mut n = lock(&now);
                        *n += 1;
                        let mut m = lock(&most);
                        *m = (*m).max(*n);
                        drop((n, m));
                        std::thread::yield_now();
                        *lock(&now) -= 1;
                        drop(place);
                    }
                });
            }
        });
        let most = *lock(&most);
        assert!((1..=3).contains(&most), "{most} at once with 3 places");
        assert_eq!(places.counts(), (0, 0));
    }
}
