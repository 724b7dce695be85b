//! The per-peer replay window of authenticated datagrams, as in IPsec and
//! WireGuard: the newest epoch seen from the peer, the highest counter seen in
//! it, and a bitmap of the `WINDOW` counters below that.
//!
//! A counter seen before or below the window is refused, and so is any
//! datagram of an older epoch; a newer epoch (the peer restarted) starts a new
//! window. Datagrams a little out of order are still accepted: UDP reorders.
//! The window is only told about datagrams whose tag verified, so a forger
//! cannot move it.

use super::frame::Header;

/// Counters below the highest that are still accepted once each.
pub(crate) const WINDOW: u64 = 1024;
const WORDS: usize = (WINDOW / 64) as usize;

/// Why an authenticated datagram was refused; all count as reason `replay`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reject {
    /// From an earlier boot of the peer than one already heard.
    OldEpoch,
    /// This counter was already accepted.
    Seen,
    /// Too far below the highest counter to be remembered.
    BelowWindow,
}

/// One peer's window. `Default` has heard nothing yet.
#[derive(Clone, Debug, Default)]
pub(crate) struct ReplayWindow {
    /// The newest epoch heard; None before the first datagram.
    epoch: Option<u64>,
    highest: u64,
    /// Bit i: counter `highest - i` was accepted.
    seen: [u64; WORDS],
}

impl ReplayWindow {
    /// Accepts `header` once, recording it, or says why not.
    pub fn accept(&mut self, header: Header) -> Result<(), Reject> {
        match self.epoch {
            Some(epoch) if header.epoch < epoch => return Err(Reject::OldEpoch),
            Some(epoch) if header.epoch == epoch => {}
            _ => {
                *self = ReplayWindow {
                    epoch: Some(header.epoch),
                    highest: header.counter,
                    seen: [0; WORDS],
                };
                self.mark(0);
                return Ok(());
            }
        }
        if header.counter > self.highest {
            self.shift(header.counter - self.highest);
            self.highest = header.counter;
            self.mark(0);
            return Ok(());
        }
        let behind = self.highest - header.counter;
        if behind >= WINDOW {
            return Err(Reject::BelowWindow);
        }
        if self.is_marked(behind) {
            return Err(Reject::Seen);
        }
        self.mark(behind);
        Ok(())
    }

    fn mark(&mut self, behind: u64) {
        self.seen[(behind / 64) as usize] |= 1 << (behind % 64);
    }

    fn is_marked(&self, behind: u64) -> bool {
        self.seen[(behind / 64) as usize] & (1 << (behind % 64)) != 0
    }

    /// Moves every bit `by` places toward "older"; bits past the window go.
    fn shift(&mut self, by: u64) {
        if by >= WINDOW {
            self.seen = [0; WORDS];
            return;
        }
        let (words, bits) = ((by / 64) as usize, (by % 64) as u32);
        for j in (0..WORDS).rev() {
            let low = j.checked_sub(words).map_or(0, |k| self.seen[k]);
            let lower = j.checked_sub(words + 1).map_or(0, |k| self.seen[k]);
            self.seen[j] = if bits == 0 {
                low
            } else {
                (low << bits) | (lower >> (64 - bits))
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(epoch: u64, counter: u64) -> Header {
        Header { epoch, counter }
    }

    #[test]
    fn each_counter_is_accepted_once_in_any_order_within_the_window() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.accept(h(5, 10)), Ok(()));
        assert_eq!(w.accept(h(5, 10)), Err(Reject::Seen));
        assert_eq!(w.accept(h(5, 8)), Ok(()), "late but new");
        assert_eq!(w.accept(h(5, 8)), Err(Reject::Seen));
        assert_eq!(w.accept(h(5, 12)), Ok(()));
        assert_eq!(w.accept(h(5, 11)), Ok(()));
        for c in [8, 10, 11, 12] {
            assert_eq!(w.accept(h(5, c)), Err(Reject::Seen), "{c}");
        }
        assert_eq!(w.accept(h(5, 9)), Ok(()));
    }

    #[test]
    fn the_window_edges_hold() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.accept(h(1, 2000)), Ok(()));
        assert_eq!(
            w.accept(h(1, 2000 - WINDOW)),
            Err(Reject::BelowWindow),
            "just below"
        );
        assert_eq!(w.accept(h(1, 2000 - WINDOW + 1)), Ok(()), "the oldest slot");
        assert_eq!(w.accept(h(1, 2000 - WINDOW + 1)), Err(Reject::Seen));
        // A jump by less than the window keeps what it covers ...
        assert_eq!(w.accept(h(1, 2000 + 100)), Ok(()));
        assert_eq!(
            w.accept(h(1, 2000)),
            Err(Reject::Seen),
            "kept across the shift"
        );
        assert_eq!(w.accept(h(1, 2050)), Ok(()));
        // ... a jump far ahead forgets everything below the new window.
        assert_eq!(w.accept(h(1, u64::MAX - 1)), Ok(()));
        assert_eq!(w.accept(h(1, 2100)), Err(Reject::BelowWindow));
        assert_eq!(w.accept(h(1, u64::MAX)), Ok(()));
        assert_eq!(w.accept(h(1, u64::MAX - 1)), Err(Reject::Seen));
        assert_eq!(w.accept(h(1, u64::MAX - 2)), Ok(()));
    }

    #[test]
    fn shifts_by_every_distance_keep_exactly_the_marks_inside() {
        for by in [
            1,
            2,
            63,
            64,
            65,
            127,
            128,
            500,
            WINDOW - 1,
            WINDOW,
            WINDOW + 1,
        ] {
            let mut w = ReplayWindow::default();
            let start = 10_000;
            for c in (start - WINDOW + 1..=start).step_by(3) {
                let _ = w.accept(h(1, c));
            }
            assert_eq!(w.accept(h(1, start + by)), Ok(()));
            for c in (start + by).saturating_sub(WINDOW - 1)..start + by {
                let marked = c <= start && (c + WINDOW - 1 - start).is_multiple_of(3);
                let got = w.accept(h(1, c));
                if marked {
                    assert_eq!(got, Err(Reject::Seen), "by {by}, counter {c}");
                } else {
                    assert_eq!(got, Ok(()), "by {by}, counter {c}");
                }
            }
        }
    }

    #[test]
    fn an_old_epoch_is_refused_and_a_newer_one_starts_afresh() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.accept(h(100, 50)), Ok(()));
        assert_eq!(w.accept(h(99, 51)), Err(Reject::OldEpoch));
        assert_eq!(w.accept(h(101, 0)), Ok(()), "the peer restarted");
        assert_eq!(w.accept(h(101, 0)), Err(Reject::Seen));
        assert_eq!(
            w.accept(h(100, 51)),
            Err(Reject::OldEpoch),
            "the old boot is over"
        );
        assert_eq!(w.accept(h(101, 1)), Ok(()));
    }
}
