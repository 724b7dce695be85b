//! The worker's arithmetic: p_N for N = 10^6 .. 10^10, ours in-process
//! (`raftlb::primes::nth_prime`, the function a worker calls on a cache miss)
//! beside `primesieve --nth-prime N -t1` and `primecount --nth-prime N -t1`,
//! all single-threaded. Theirs are timed by their own `--time` (the `Seconds:`
//! line, so process start-up is not counted against them); every answer is
//! checked against ours and SPEC's. Each figure is the median of a few runs.

use std::hint::black_box;
use std::process::Command;
use std::time::Instant;

use raftlb::primes::nth_prime;

use crate::table::{Report, Row};
use crate::Settings;

/// p_N as SPEC.md gives them (10^7 is not in SPEC: OEIS A006988).
const KNOWN: [(u64, u64); 5] = [
    (1_000_000, 15_485_863),
    (10_000_000, 179_424_673),
    (100_000_000, 2_038_074_743),
    (1_000_000_000, 22_801_763_489),
    (10_000_000_000, 252_097_800_623),
];

/// The N at which the issue sets the goals.
const GOAL_N: u64 = 1_000_000_000;

/// Runs of primesieve at N (it takes ~4 s at 10^9 and ~40 s at 10^10 here).
fn primesieve_runs(n: u64, settings: &Settings) -> usize {
    match (n, settings.quick) {
        (10_000_000_000, true) => 0,
        (10_000_000_000, false) => 1,
        (_, true) => 1,
        _ => 3,
    }
}

pub fn run(settings: &Settings, report: &mut Report) {
    for (n, known) in KNOWN {
        let (ours_secs, p) = ours(n, if n >= 10_000_000_000 { 3 } else { 7 });
        let what = format!("p_N, N = 10^{}, one thread", n.ilog10());
        if p != known {
            report.row(Row::error(
                "worker",
                what,
                &format!("ours gave {p}, SPEC says {known}"),
            ));
            continue;
        }
        let runs = primesieve_runs(n, settings);
        let sieve = if runs == 0 {
            Err("skipped (BENCH_QUICK)".to_string())
        } else {
            theirs("primesieve", n, runs, known, report)
        };
        let count = theirs("primecount", n, 5, known, report);
        let ours_text = secs(ours_secs);
        let row = |name: &str, r: &Result<f64, String>| {
            let base = Row::new(
                "worker",
                format!("{what}, vs {name} -t1"),
                ours_text.clone(),
            );
            match r {
                Ok(t) => base.against(format!("{name}: {}", secs(*t))),
                Err(e) => base.against(format!("{name}: {e}")),
            }
        };
        let mut vs_sieve = row("primesieve", &sieve);
        if let Ok(t) = sieve {
            vs_sieve = vs_sieve.ratio(t, ours_secs, "primesieve ÷ raftlb");
            if n == GOAL_N {
                vs_sieve = vs_sieve.goal("≥ 20 (20x faster)", t / ours_secs >= 20.0);
            }
        }
        let mut vs_count = row("primecount", &count);
        if let Ok(t) = count {
            // primecount prints milliseconds: below one, no ratio is honest.
            if t >= 0.001 {
                vs_count = vs_count.ratio(ours_secs, t, "raftlb ÷ primecount");
            }
            if n == GOAL_N {
                vs_count = vs_count.goal("≤ 10 (within 10x)", ours_secs <= 10.0 * t);
            }
        }
        report.row(vs_sieve);
        report.row(vs_count);
    }
}

/// Median seconds of `runs` computations of p_N in-process, and p_N.
fn ours(n: u64, runs: usize) -> (f64, u64) {
    let mut times = Vec::with_capacity(runs);
    let mut p = 0;
    for _ in 0..runs {
        let start = Instant::now();
        p = black_box(nth_prime(black_box(n)));
        times.push(start.elapsed().as_secs_f64());
    }
    (median(times), p)
}

/// Median of `program --nth-prime n -t1 --time`'s own timing over `runs`
/// runs, after checking its answer is `known`.
fn theirs(
    program: &str,
    n: u64,
    runs: usize,
    known: u64,
    report: &mut Report,
) -> Result<f64, String> {
    let args = [
        "--nth-prime".to_string(),
        n.to_string(),
        "-t1".into(),
        "--time".into(),
    ];
    report.command(
        "worker",
        format!("{program} {}   # {runs} run(s)", args.join(" ")),
    );
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let out = Command::new(program)
            .args(&args)
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (seconds, answer) = parse(&text).ok_or_else(|| format!("unreadable output: {text}"))?;
        if answer != known {
            return Err(format!("answered {answer}, expected {known}"));
        }
        times.push(seconds);
    }
    Ok(median(times))
}

/// (seconds, answer) from primesieve's (`Seconds: 0.4`, `Nth prime: 2038074743`)
/// or primecount's (`2038074743`, `Seconds: 0.005`) output.
fn parse(text: &str) -> Option<(f64, u64)> {
    let mut seconds = None;
    let mut answer = None;
    for line in text.lines().map(str::trim) {
        if let Some(s) = line.strip_prefix("Seconds:") {
            seconds = s.trim().parse().ok();
        } else if let Some(a) = line.strip_prefix("Nth prime:") {
            answer = a.trim().parse().ok();
        } else if let Ok(a) = line.parse() {
            answer = Some(a);
        }
    }
    Some((seconds?, answer?))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A duration for the table: "13.2 ms", "4.67 s", "< 1 ms".
fn secs(s: f64) -> String {
    if s <= 0.0 {
        "< 1 ms".to_string()
    } else if s < 1.0 {
        crate::loadgen::ms(s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}
