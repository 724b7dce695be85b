//! What a bench run counts and reports: each client thread's `Tally` (ok
//! latencies, failures by kind), merged into one `Summary` with nearest-rank
//! percentiles, printed as one human line or as the `--json` object the bench
//! driver reads.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::http::conn::{Error, NoAnswer};

/// Why a request did not count as ok: the status the target answered, or
/// no status at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum FailureKind {
    Status(u16),
    Transport(NoAnswer),
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureKind::Status(status) => write!(f, "{status}"),
            FailureKind::Transport(failure) => f.write_str(failure.name()),
        }
    }
}

/// One kind of failure as a thread saw it.
#[derive(Debug, Default)]
struct Failures {
    count: u64,
    /// The first reason given, for the line that says why nothing succeeded
    /// (kept once per kind, so that a failing target costs no allocation per
    /// request).
    example: String,
}

/// Which requests a latency is counted with: a mixed prime load's cheap or
/// costly N apart, so that a report shows where the latency went (in a
/// closed loop the clients' time is a fixed budget, and a policy that
/// answers cheap requests sooner leaves more of it to the costly ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Every load but a mix: one class.
    Only,
    Cheap,
    Costly,
}

/// What one client thread saw in the measured window.
#[derive(Debug, Default)]
pub struct Tally {
    /// The latency of each ok request in µs but the costly ones; u32 holds
    /// the 10 s request timeout hundreds of times over, at half the memory of
    /// u64.
    latencies_us: Vec<u32>,
    /// The latency of each ok costly request of a mix, in µs.
    costly_us: Vec<u32>,
    /// Whether any request was of a mix's class (then the summary has one
    /// per class).
    mixed: bool,
    failures: BTreeMap<FailureKind, Failures>,
}

impl Tally {
    /// A tally with room for `ok` latencies before it grows.
    pub fn with_capacity(ok: usize) -> Tally {
        Tally {
            latencies_us: Vec::with_capacity(ok),
            ..Tally::default()
        }
    }

    /// Counts one request's outcome; only a 200 is ok.
    pub fn record(&mut self, result: &Result<u16, Error>, latency: Duration, class: Class) {
        self.mixed |= class != Class::Only;
        match result {
            Ok(200) => {
                let us = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
                match class {
                    Class::Costly => self.costly_us.push(us),
                    Class::Only | Class::Cheap => self.latencies_us.push(us),
                }
            }
            Ok(status) => self.fail(FailureKind::Status(*status), || {
                format!("the target answered {status}")
            }),
            Err(e) => self.fail(FailureKind::Transport(e.failure), || e.detail.clone()),
        }
    }

    fn fail(&mut self, kind: FailureKind, reason: impl FnOnce() -> String) {
        let failures = self.failures.entry(kind).or_default();
        if failures.count == 0 {
            failures.example = reason();
        }
        failures.count += 1;
    }

    /// Adds another thread's tally to this one.
    pub fn merge(&mut self, other: Tally) {
        self.latencies_us.extend_from_slice(&other.latencies_us);
        self.costly_us.extend_from_slice(&other.costly_us);
        self.mixed |= other.mixed;
        for (kind, theirs) in other.failures {
            let ours = self.failures.entry(kind).or_default();
            if ours.count == 0 {
                ours.example = theirs.example;
            }
            ours.count += theirs.count;
        }
    }
}

/// The report of a run: the `--json` object, field for field.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// `prime`, `note` or `etcd-put`.
    pub kind: &'static str,
    pub target: String,
    pub concurrency: usize,
    /// The measured window: `--duration-secs`, or less when `--max-requests`
    /// ended it first.
    pub secs: f64,
    pub ok: u64,
    pub failed: u64,
    /// Failed requests by kind: a status (`"503"`), `connect`, `timeout`,
    /// `io`, `framing`; only the kinds that happened.
    pub failures: BTreeMap<String, u64>,
    pub per_sec: f64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// The mean of the ok requests' latencies: in a closed loop of c clients,
    /// `per_sec x mean_ms / 1000` is about c (Little's law).
    pub mean_ms: Option<f64>,
    /// A mixed prime load's cheap requests alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cheap: Option<ClassSummary>,
    /// A mixed prime load's costly requests alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub costly: Option<ClassSummary>,
    /// The most frequent failure with its first reason, for the stderr line
    /// when nothing succeeded.
    #[serde(skip)]
    pub worst_failure: Option<String>,
}

impl Summary {
    pub fn new(
        kind: &'static str,
        target: String,
        concurrency: usize,
        window: Duration,
        tally: Tally,
    ) -> Summary {
        let (mut cheap_us, mut costly_us) = (tally.latencies_us, tally.costly_us);
        cheap_us.sort_unstable();
        costly_us.sort_unstable();
        let (cheap, costly) = if tally.mixed {
            (
                Some(ClassSummary::of(&cheap_us)),
                Some(ClassSummary::of(&costly_us)),
            )
        } else {
            (None, None)
        };
        let mut latencies_us = cheap_us;
        latencies_us.extend_from_slice(&costly_us);
        latencies_us.sort_unstable();
        let ms = |per_mille| percentile(&latencies_us, per_mille).map(|us| f64::from(us) / 1e3);
        let ok = latencies_us.len() as u64;
        let failed = tally.failures.values().map(|f| f.count).sum();
        let worst_failure = tally
            .failures
            .iter()
            .max_by_key(|(_, f)| f.count)
            .map(|(kind, f)| format!("{} × {kind} ({})", f.count, f.example));
        let secs = window.as_secs_f64();
        Summary {
            kind,
            target,
            concurrency,
            secs,
            ok,
            failed,
            failures: (tally.failures.iter())
                .map(|(kind, f)| (kind.to_string(), f.count))
                .collect(),
            per_sec: if secs > 0.0 { ok as f64 / secs } else { 0.0 },
            p50_ms: ms(500),
            p90_ms: ms(900),
            p99_ms: ms(990),
            p999_ms: ms(999),
            max_ms: ms(1000),
            mean_ms: mean_ms(&latencies_us),
            cheap,
            costly,
            worst_failure,
        }
    }

    /// The one human line: `prime http://… c=16 10.0 s: 21,345 ok/s, 0 failed;
    /// latency ms p50 0.62 p90 1.1 p99 3.9 p99.9 7.0 max 12.1`.
    pub fn line(&self) -> String {
        let mut line = format!(
            "{} {} c={} {:.1} s: {} ok/s, {} failed",
            self.kind,
            self.target,
            self.concurrency,
            self.secs,
            thousands(self.per_sec.round() as u64),
            thousands(self.failed),
        );
        if !self.failures.is_empty() {
            let kinds: Vec<String> = (self.failures.iter())
                .map(|(kind, count)| format!("{kind} {}", thousands(*count)))
                .collect();
            let _ = write!(line, " ({})", kinds.join(", "));
        }
        line.push_str("; latency ms");
        let points = [
            ("p50", self.p50_ms),
            ("p90", self.p90_ms),
            ("p99", self.p99_ms),
            ("p99.9", self.p999_ms),
            ("max", self.max_ms),
        ];
        for (name, value) in points {
            match value {
                Some(ms) => write!(line, " {name} {}", short_ms(ms)),
                None => write!(line, " {name} -"),
            }
            .expect("writing to a String cannot fail");
        }
        for (name, class) in [("cheap", &self.cheap), ("costly", &self.costly)] {
            if let Some(class) = class {
                write!(line, "; {name} {}", class.line()).expect("writing to a String cannot fail");
            }
        }
        line
    }
}

/// One class of a mixed load's ok requests (the benchmarks read it back).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClassSummary {
    pub ok: u64,
    pub mean_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl ClassSummary {
    fn of(sorted_us: &[u32]) -> ClassSummary {
        let ms = |per_mille| percentile(sorted_us, per_mille).map(|us| f64::from(us) / 1e3);
        ClassSummary {
            ok: sorted_us.len() as u64,
            mean_ms: mean_ms(sorted_us),
            p50_ms: ms(500),
            p99_ms: ms(990),
        }
    }

    /// "1,234 ok mean 3.1 p50 0.52 p99 40.2".
    fn line(&self) -> String {
        let mut line = format!("{} ok", thousands(self.ok));
        for (name, value) in [
            ("mean", self.mean_ms),
            ("p50", self.p50_ms),
            ("p99", self.p99_ms),
        ] {
            match value {
                Some(ms) => write!(line, " {name} {}", short_ms(ms)),
                None => write!(line, " {name} -"),
            }
            .expect("writing to a String cannot fail");
        }
        line
    }
}

/// The mean of latencies in µs, in ms; None for none.
fn mean_ms(us: &[u32]) -> Option<f64> {
    let sum: u64 = us.iter().map(|v| u64::from(*v)).sum();
    (!us.is_empty()).then(|| sum as f64 / us.len() as f64 / 1e3)
}

/// The nearest-rank percentile of sorted values, `per_mille` in 1..=1000
/// (990 is p99, 999 is p99.9): the smallest value with at least that share
/// of the values at or below it. Integer arithmetic, so p99.9 of 1000 values
/// is the 999th and not, through a rounding error, the 1000th.
pub fn percentile(sorted: &[u32], per_mille: u64) -> Option<u32> {
    assert!((1..=1000).contains(&per_mille), "per mille {per_mille}");
    let n = sorted.len() as u64;
    let rank = (per_mille * n).div_ceil(1000).max(1);
    sorted.get(usize::try_from(rank).ok()? - 1).copied()
}

/// 21345 -> "21,345".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Two significant digits below 1 ms, tenths above, whole ms past 100.
fn short_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{ms:.2}")
    } else if ms < 100.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&values, 500), Some(500));
        assert_eq!(percentile(&values, 990), Some(990));
        assert_eq!(percentile(&values, 999), Some(999));
        assert_eq!(percentile(&values, 1000), Some(1000));
        let ten: Vec<u32> = (1..=10).map(|v| v * 10).collect();
        assert_eq!(percentile(&ten, 500), Some(50));
        assert_eq!(percentile(&ten, 900), Some(90));
        // 99 % of 10 values is 9.9: rank 10.
        assert_eq!(percentile(&ten, 990), Some(100));
        assert_eq!(percentile(&[3, 5, 9], 500), Some(5));
        assert_eq!(percentile(&[3, 5, 9], 1), Some(3));
    }

    #[test]
    fn percentiles_of_nothing_and_of_one_value() {
        assert_eq!(percentile(&[], 500), None);
        assert_eq!(percentile(&[], 1000), None);
        for per_mille in [1, 500, 990, 999, 1000] {
            assert_eq!(percentile(&[42], per_mille), Some(42));
        }
    }

    fn tally(ok_us: &[u64], statuses: &[u16]) -> Tally {
        let mut tally = Tally::default();
        for us in ok_us {
            tally.record(&Ok(200), Duration::from_micros(*us), Class::Only);
        }
        for status in statuses {
            tally.record(&Ok(*status), Duration::ZERO, Class::Only);
        }
        tally
    }

    #[test]
    fn a_summary_merges_threads_and_counts_failures_by_kind() {
        let mut all = tally(&[3000, 1000], &[503, 503]);
        all.merge(tally(&[2000], &[502]));
        let mut refused = Tally::default();
        let error = Error {
            failure: NoAnswer::Connect,
            detail: "connection refused".into(),
        };
        refused.record(&Err(error), Duration::ZERO, Class::Only);
        all.merge(refused);
        let summary = Summary::new("prime", "http://h:1".into(), 2, Duration::from_secs(2), all);
        assert_eq!((summary.ok, summary.failed), (3, 4));
        assert_eq!(summary.per_sec, 1.5);
        assert_eq!((summary.p50_ms, summary.max_ms), (Some(2.0), Some(3.0)));
        let failures: Vec<(&str, u64)> = (summary.failures.iter())
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(failures, [("502", 1), ("503", 2), ("connect", 1)]);
        assert_eq!(
            summary.worst_failure.as_deref(),
            Some("2 × 503 (the target answered 503)")
        );
        assert_eq!(
            summary.line(),
            "prime http://h:1 c=2 2.0 s: 2 ok/s, 4 failed (502 1, 503 2, connect 1); \
             latency ms p50 2.0 p90 3.0 p99 3.0 p99.9 3.0 max 3.0"
        );
    }

    #[test]
    fn a_summary_without_ok_requests_has_null_percentiles() {
        let summary = Summary::new(
            "note",
            "t".into(),
            1,
            Duration::from_secs(1),
            tally(&[], &[]),
        );
        let json = serde_json::to_value(&summary).expect("serializes");
        assert_eq!(json["ok"], 0);
        assert!(json["p50_ms"].is_null() && json["max_ms"].is_null());
        assert!(summary
            .line()
            .ends_with("latency ms p50 - p90 - p99 - p99.9 - max -"));
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
    }

    #[test]
    fn a_mixed_load_is_summed_up_whole_and_per_class() {
        let mut one = Tally::default();
        for ms in [1, 2, 3] {
            one.record(&Ok(200), Duration::from_millis(ms), Class::Cheap);
        }
        one.record(&Ok(502), Duration::ZERO, Class::Costly);
        let mut two = Tally::default();
        two.record(&Ok(200), Duration::from_millis(100), Class::Costly);
        one.merge(two);
        let summary = Summary::new("prime", "t".into(), 2, Duration::from_secs(1), one);
        assert_eq!((summary.ok, summary.failed), (4, 1));
        assert_eq!(summary.max_ms, Some(100.0), "the whole holds both classes");
        assert_eq!(summary.mean_ms, Some(26.5));
        let cheap = summary.cheap.as_ref().expect("a mix has classes");
        let costly = summary.costly.as_ref().expect("a mix has classes");
        assert_eq!(
            (cheap.ok, cheap.mean_ms, cheap.p99_ms),
            (3, Some(2.0), Some(3.0))
        );
        assert_eq!((costly.ok, costly.p50_ms), (1, Some(100.0)));
        assert!(summary.line().ends_with(
            "; cheap 3 ok mean 2.0 p50 2.0 p99 3.0; costly 1 ok mean 100 p50 100 p99 100"
        ));
        let json = serde_json::to_value(&summary).expect("serializes");
        assert_eq!(json["costly"]["ok"], 1);
        // One class: no per-class fields at all.
        let plain = Summary::new(
            "note",
            "t".into(),
            1,
            Duration::from_secs(1),
            tally(&[5], &[]),
        );
        let json = serde_json::to_value(&plain).expect("serializes");
        assert!(json.get("cheap").is_none() && json.get("costly").is_none());
        assert_eq!(json["mean_ms"], 0.005);
    }
}
