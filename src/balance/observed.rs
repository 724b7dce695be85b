//! What one node observes of one server: its requests in flight there (with
//! their costs), the server's slowdown as a peak EWMA, and a decaying error
//! penalty. Time is passed in as milliseconds on any monotonic scale the caller
//! keeps; nothing here reads a clock.

/// A value that jumps up on a higher sample and otherwise follows the samples
/// as an exponentially weighted average whose weight decays with the time
/// between samples: the "peak EWMA" of Finagle's `PeakEwma` and Linkerd's
/// balancer. Jumping up at once makes a server that turned slow look slow at
/// its first slow answer; easing down makes one fast answer not undo it.
#[derive(Clone, Debug)]
pub(crate) struct PeakEwma {
    value: f64,
    at_ms: f64,
}

impl PeakEwma {
    pub fn new(sample: f64, now_ms: f64) -> PeakEwma {
        PeakEwma {
            value: sample,
            at_ms: now_ms,
        }
    }

    /// Folds in `sample`; `decay_ms` is the time constant of the average,
    /// `peak` how far a higher sample moves the value at once (0..=1).
    pub fn observe(&mut self, sample: f64, now_ms: f64, decay_ms: f64, peak: f64) {
        let elapsed_ms = (now_ms - self.at_ms).max(0.0);
        let keep = (-elapsed_ms / decay_ms).exp();
        self.value = self.value * keep + sample * (1.0 - keep);
        if sample > self.value {
            self.value += (sample - self.value) * peak;
        }
        self.at_ms = self.at_ms.max(now_ms);
    }

    pub fn value(&self) -> f64 {
        self.value
    }

    /// Milliseconds since the last sample.
    pub fn age_ms(&self, now_ms: f64) -> f64 {
        (now_ms - self.at_ms).max(0.0)
    }
}

/// A penalty that grows by one on each failure and decays exponentially.
#[derive(Clone, Debug, Default)]
pub(crate) struct Decaying {
    value: f64,
    at_ms: f64,
}

impl Decaying {
    pub(crate) fn bump(&mut self, now_ms: f64, decay_ms: f64) {
        self.value = self.value(now_ms, decay_ms) + 1.0;
        self.at_ms = self.at_ms.max(now_ms);
    }

    pub fn value(&self, now_ms: f64, decay_ms: f64) -> f64 {
        let elapsed_ms = (now_ms - self.at_ms).max(0.0);
        self.value * (-elapsed_ms / decay_ms).exp()
    }
}

/// One server as this node sees it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Observed {
    /// Costs of this node's requests in flight there. A node has at most its
    /// HTTP threads' worth of requests in flight, which bounds this list.
    pub in_flight: Vec<f64>,
    /// Milliseconds of service per unit of work ahead of a request (see
    /// `work_ahead`); `None` until the first answer.
    pub slowdown: Option<PeakEwma>,
    pub errors: Decaying,
}

impl Observed {
    /// The work a request of `cost` has to share the server with, counted from
    /// this node's own requests, under processor sharing: each request in
    /// flight delays it by its own cost or by `cost`, whichever is less (a
    /// shorter one finishes first; a longer one shares the CPU until this one
    /// is done). So a cheap request looks at how many are in flight, an
    /// expensive one at how much work.
    pub(crate) fn work_ahead(&self, cost: f64) -> f64 {
        cost + self.in_flight.iter().map(|w| w.min(cost)).sum::<f64>()
    }

    pub fn start(&mut self, cost: f64) {
        self.in_flight.push(cost);
    }

    /// Removes one request of `cost` from the in-flight list.
    pub fn end(&mut self, cost: f64) {
        if let Some(i) = self.in_flight.iter().position(|w| *w == cost) {
            self.in_flight.swap_remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_ewma_jumps_up_and_eases_down() {
        let mut e = PeakEwma::new(1.0, 0.0);
        e.observe(4.0, 10.0, 1000.0, 1.0);
        assert_eq!(e.value(), 4.0, "a slow sample counts at once");
        e.observe(1.0, 1010.0, 1000.0, 1.0);
        let v = e.value();
        assert!(v > 1.0 && v < 4.0, "one fast sample does not undo it: {v}");
        for t in 2..20 {
            e.observe(1.0, 1010.0 + 1000.0 * t as f64, 1000.0, 1.0);
        }
        assert!((e.value() - 1.0).abs() < 0.01, "{}", e.value());
    }

    #[test]
    fn error_penalty_decays() {
        let mut d = Decaying::default();
        d.bump(0.0, 1000.0);
        d.bump(0.0, 1000.0);
        assert_eq!(d.value(0.0, 1000.0), 2.0);
        assert!((d.value(1000.0, 1000.0) - 2.0 / std::f64::consts::E).abs() < 1e-9);
    }

    #[test]
    fn work_ahead_counts_requests_for_cheap_ones_and_work_for_dear_ones() {
        let mut o = Observed::default();
        o.start(40.0);
        o.start(40.0);
        assert_eq!(o.work_ahead(1.0), 3.0, "two in flight, each delays by 1");
        assert_eq!(o.work_ahead(40.0), 120.0);
        o.end(40.0);
        assert_eq!(o.in_flight.len(), 1);
        o.end(7.0);
        assert_eq!(o.in_flight.len(), 1, "an unknown cost removes nothing");
    }
}
