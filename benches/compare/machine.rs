//! The machine and the versions a run measured, for BENCHMARKS.md: a figure
//! means little without them.

use std::process::Command;

use crate::procs::{self, version_line};

/// The package root, where BENCHMARKS.md goes and `git describe` is asked.
pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Output of a command, trimmed; "unknown" when it fails.
fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .current_dir(ROOT)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

/// The first value of `key` in a /proc file of `key : value` lines.
fn proc_field(path: &str, key: &str) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// The date (UTC), the machine and every version, as markdown list items.
pub fn describe() -> String {
    let ram_kib: f64 = proc_field("/proc/meminfo", "MemTotal")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let lines = [
        ("date", output("date", &["-u", "+%Y-%m-%d %H:%M UTC"])),
        (
            "machine",
            format!(
                "{} CPUs (nproc), {}, Linux {kernel}, {:.1} GiB RAM",
                procs::cpus(),
                proc_field("/proc/cpuinfo", "model name"),
                ram_kib / 1024.0 / 1024.0
            ),
        ),
        (
            "data dirs",
            format!(
                "{} ({}), fsync on every side",
                std::env::temp_dir().display(),
                output(
                    "stat",
                    &[
                        "-f",
                        "-c",
                        "%T",
                        &std::env::temp_dir().display().to_string()
                    ]
                )
            ),
        ),
        (
            "raftlb",
            format!(
                "{} ({})",
                output("git", &["describe", "--always", "--dirty"]),
                output("git", &["rev-parse", "HEAD"])
            ),
        ),
        ("etcd", version_line("etcd", "--version")),
        ("haproxy", version_line("haproxy", "-v")),
        ("nginx", version_line("nginx", "-v")),
        ("primesieve", version_line("primesieve", "--version")),
        ("primecount", version_line("primecount", "--version")),
        ("wrk", version_line("wrk", "-v")),
        ("rustc", version_line("rustc", "--version")),
    ];
    lines.iter().map(|(k, v)| format!("- {k}: {v}\n")).collect()
}
