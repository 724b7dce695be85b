//! What one node observes of one server: its requests in flight there (with
//! their costs), the server's slowdown as a peak EWMA, and a decaying error
//! penalty. Time is passed in as milliseconds on any monotonic scale the caller
//! keeps; nothing here reads a clock.

/// A server's slowdown: milliseconds of answer time per unit of cost, the
/// ratio of two sums that decay exponentially with time, of answer times and
/// of costs. So each answer counts in proportion to its cost: the mean of
/// per-answer ratios let a cheap request (0.1 units) that waited 400 ms
/// behind costly ones weigh 4,000 against a costly one's 12, and one such
/// answer made a server look a hundred times slower than the others, so it
/// was sent nothing new until that news aged (the machines bench, even
/// scenario: 500 req/s against HAProxy leastconn's 654).
///
/// `peak` makes a slower answer than the average count at once, part of the
/// way (Finagle's and Linkerd's peak EWMA jump all the way); off by default.
#[derive(Clone, Debug)]
pub(crate) struct Slowdown {
    service_ms: f64,
    cost: f64,
    at_ms: f64,
}

impl Slowdown {
    pub fn new(service_ms: f64, cost: f64, now_ms: f64) -> Slowdown {
        Slowdown {
            service_ms,
            cost,
            at_ms: now_ms,
        }
    }

    /// Folds in an answer of `service_ms` to a request of `cost`; `decay_ms`
    /// is the sums' time constant, `peak` how far a slower answer moves the
    /// value at once (0..=1).
    pub fn observe(&mut self, service_ms: f64, cost: f64, now_ms: f64, decay_ms: f64, peak: f64) {
        let elapsed_ms = (now_ms - self.at_ms).max(0.0);
        let keep = (-elapsed_ms / decay_ms).exp();
        self.service_ms = self.service_ms * keep + service_ms;
        self.cost = self.cost * keep + cost;
        let (value, sample) = (self.value(), service_ms / cost);
        if sample > value {
            self.service_ms = self.cost * (value + (sample - value) * peak);
        }
        self.at_ms = self.at_ms.max(now_ms);
    }

    pub fn value(&self) -> f64 {
        self.service_ms / self.cost
    }

    /// Milliseconds since the last answer.
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
    /// Milliseconds of answer time per unit of cost; `None` until the first
    /// answer.
    pub slowdown: Option<Slowdown>,
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
    fn slowdown_weighs_each_answer_by_its_cost() {
        // Three costly answers at 10 ms per unit, then a cheap one (0.1 units)
        // that waited 400 ms in a queue: the server is not 4,000x slower.
        let mut s = Slowdown::new(300.0, 30.0, 0.0);
        s.observe(300.0, 30.0, 0.0, 1000.0, 0.0);
        s.observe(300.0, 30.0, 0.0, 1000.0, 0.0);
        s.observe(400.0, 0.1, 0.0, 1000.0, 0.0);
        let v = s.value();
        assert!(v > 10.0 && v < 15.0, "{v}");
        // Old answers fade: the newest dominate.
        for t in 1..20 {
            s.observe(20.0, 1.0, 1000.0 * f64::from(t), 1000.0, 0.0);
        }
        assert!((s.value() - 20.0).abs() < 0.1, "{}", s.value());
    }

    #[test]
    fn a_peak_slowdown_counts_a_slow_answer_at_once() {
        let mut s = Slowdown::new(10.0, 10.0, 0.0);
        s.observe(40.0, 10.0, 10.0, 1000.0, 1.0);
        assert_eq!(s.value(), 4.0, "a slow answer counts at once");
        s.observe(10.0, 10.0, 1010.0, 1000.0, 1.0);
        let v = s.value();
        assert!(v > 1.0 && v < 4.0, "one fast answer does not undo it: {v}");
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
