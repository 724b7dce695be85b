//! Runs the load tool, `raftlb bench … --json`, and reads its one JSON object.
//!
//! Every load of the comparison goes through this one tool, against raftlb and
//! against the reference alike, so that a ratio compares the systems and not two
//! load generators. Each command line run is kept for BENCHMARKS.md.

use std::collections::BTreeMap;
use std::process::Command;

use serde::Deserialize;

/// The `raftlb` client binary, which holds the `bench` command.
const CLIENT: &str = env!("CARGO_BIN_EXE_raftlb");

/// What `raftlb bench --json` prints (the `loadgen` contract), the fields the
/// table shows.
#[derive(Clone, Debug, Deserialize)]
pub struct Load {
    pub failed: u64,
    #[serde(default)]
    pub failures: BTreeMap<String, u64>,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    #[serde(default)]
    pub p999_ms: Option<f64>,
    #[serde(default)]
    pub mean_ms: Option<f64>,
    /// A mixed load's cheap and costly requests apart.
    #[serde(default)]
    pub cheap: Option<Class>,
    #[serde(default)]
    pub costly: Option<Class>,
    /// Each machine's CPU use over the load, in percent of its quota, where
    /// the caller measured it (not `raftlb bench`'s).
    #[serde(skip)]
    pub busy: Vec<f64>,
}

/// One class of a mixed load's requests (`raftlb bench`'s `cheap`,
/// `costly`), read back into the type that wrote it.
pub use raftlb::client::bench::stats::ClassSummary as Class;

/// "1,234 ok, mean 3.10 ms, p50 0.52 ms, p99 40.2 ms".
pub fn class_text(class: &Class) -> String {
    let ms = |v: Option<f64>| v.map_or("-".into(), ms);
    format!(
        "{} ok, mean {}, p50 {}, p99 {}",
        thousands(class.ok as f64),
        ms(class.mean_ms),
        ms(class.p50_ms),
        ms(class.p99_ms)
    )
}

impl Load {
    /// "12,345/s, p50 1.23 ms, p99 4.56 ms" and the failures, if any.
    pub fn summary(&self, unit: &str) -> String {
        self.summary_of(unit, false)
    }

    /// The same for requests with p99.9 after p99, where the tail is the point.
    pub fn summary_with_tail(&self) -> String {
        self.summary_of(" req", true)
    }

    fn summary_of(&self, unit: &str, tail: bool) -> String {
        let mut s = format!(
            "{}{unit}/s, p50 {}, p99 {}",
            thousands(self.per_sec),
            ms(self.p50_ms),
            ms(self.p99_ms)
        );
        if let Some(p999) = self.p999_ms.filter(|_| tail) {
            s += &format!(", p99.9 {}", ms(p999));
        }

        if self.failed > 0 {
            let reasons: Vec<String> = self
                .failures
                .iter()
                .map(|(reason, n)| format!("{n} {reason}"))
                .collect();
            s += &format!(" ({} failed: {})", self.failed, reasons.join(", "));
        }
        s
    }
}

/// The load whose rate is the median of `loads` (the upper one of an even
/// count), so that its latencies come from the same run as its rate.
pub fn median(loads: &[Load]) -> Option<&Load> {
    let mut sorted: Vec<&Load> = loads.iter().collect();
    sorted.sort_by(|a, b| a.per_sec.total_cmp(&b.per_sec));
    sorted.get(sorted.len() / 2).copied()
}

/// One load: the arguments after `raftlb bench`, `--json` added. Returns the
/// result and the command line as a user would type it, `label` (what the
/// target is) as a comment.
pub fn run(args: &[String], label: &str) -> (Result<Load, String>, String) {
    let shown = format!("raftlb bench {}   # {label}", args.join(" "));
    let mut all = args.to_vec();
    all.push("--json".into());
    let result = Command::new(CLIENT)
        .arg("bench")
        .args(&all)
        .output()
        .map_err(|e| format!("{shown}: {e}"))
        .and_then(|out| {
            let stdout = String::from_utf8_lossy(&out.stdout);
            serde_json::from_str::<Load>(stdout.trim()).map_err(|e| {
                format!(
                    "{shown}: exit {}, no result ({e}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            })
        });
    (result, shown)
}

/// The standard arguments of a timed load.
pub fn timed(
    kind: &str,
    target: &str,
    concurrency: usize,
    secs: u64,
    warmup_secs: u64,
) -> Vec<String> {
    [
        kind,
        "--target",
        target,
        "--concurrency",
        &concurrency.to_string(),
        "--duration-secs",
        &secs.to_string(),
        "--warmup-secs",
        &warmup_secs.to_string(),
    ]
    .map(str::to_string)
    .to_vec()
}

/// Milliseconds, with the precision that matters at their size.
pub fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} ms")
    } else if v < 100.0 {
        format!("{v:.1} ms")
    } else {
        format!("{} ms", thousands(v))
    }
}

/// A rounded number with thousands separators: 12,345.
pub fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
