//! What the daemon takes from the procfs crate's types, and the same
//! procfs-core parsers run on fixture text so that each is tested here.
//!
//! The live readings (`sample.rs`) go through procfs: `KernelStats` for
//! /proc/stat, `CpuPressure` for /proc/pressure/cpu, `Process::stat` and each
//! task's `schedstat`. The `parse_*` functions feed text to the very parsers
//! those calls use (procfs-core's `FromRead`/`FromBufRead`), then keep only the
//! counters the load needs. Two of procfs-core's parsers slice the text at
//! offsets they have not checked (the `(comm)` of /proc/PID/stat, the `some `
//! prefix of a PSI line): the kernel always writes those shapes, and
//! `stat_shape_ok` / `psi_shape_ok` check them first so that garbage fed to
//! these wrappers is an error, never a panic. Every value is a cumulative
//! counter; the deltas are taken in `load.rs`.

use std::collections::HashMap;

use procfs::process::{Schedstat, Stat};
use procfs::{CpuPressure, CpuTime, FromBufRead, KernelStats};
#[cfg(test)]
use procfs::{ExplicitSystemInfo, FromBufReadSI, FromRead};

/// Whole-machine CPU time from the `cpu` line of /proc/stat, in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MachineTimes {
    /// Time the CPUs did work: total minus idle minus iowait.
    pub busy: u64,
    /// user + nice + system + idle + iowait + irq + softirq + steal. `guest`
    /// and `guest_nice` are left out: the kernel already counts them in `user`
    /// and `nice`.
    pub total: u64,
}

impl MachineTimes {
    /// Fields after `idle` are optional (old kernels lack them) and count as 0.
    pub(crate) fn from_cpu_time(t: &CpuTime) -> MachineTimes {
        let optional = [t.iowait, t.irq, t.softirq, t.steal];
        let total = [t.user, t.nice, t.system, t.idle]
            .into_iter()
            .chain(optional.into_iter().map(|v| v.unwrap_or(0)))
            .fold(0u64, u64::saturating_add);
        let idle = t.idle.saturating_add(t.iowait.unwrap_or(0));
        MachineTimes {
            busy: total.saturating_sub(idle),
            total,
        }
    }
}

/// The aggregate times of /proc/stat and how many CPUs it lists (at least 1,
/// so that it can always divide).
pub(crate) fn machine_times(stats: &KernelStats) -> (MachineTimes, u64) {
    let cpus = (stats.cpu_time.len() as u64).max(1);
    (MachineTimes::from_cpu_time(&stats.total), cpus)
}

/// /proc/stat text through procfs-core's `KernelStats` parser.
#[cfg(test)]
fn parse_kernel_stats(text: &str) -> Result<KernelStats, String> {
    let system_info = ExplicitSystemInfo {
        boot_time_secs: 0,
        ticks_per_second: 100,
        page_size: 4096,
        is_little_endian: cfg!(target_endian = "little"),
    };
    KernelStats::from_buf_read(text.as_bytes(), &system_info)
        .map_err(|e| format!("/proc/stat: {e}"))
}

/// The `total=` (microseconds) of the `some` line of a PSI file
/// (/proc/pressure/cpu, or a v2 cgroup's cpu.pressure): time in which at least
/// one runnable task waited for a CPU. None when the text is not PSI.
pub(crate) fn parse_psi_some_total_us(text: &str) -> Option<u64> {
    if !psi_shape_ok(text) {
        return None;
    }
    CpuPressure::from_buf_read(text.as_bytes())
        .ok()
        .map(|p| p.some.total)
}

/// procfs-core reads the first line as `some <fields>` from byte 5 on.
fn psi_shape_ok(text: &str) -> bool {
    text.lines()
        .next()
        .is_some_and(|l| l.starts_with("some ") && l.len() > 5)
}

/// What /proc/PID/stat says about one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcessTimes {
    /// utime + stime, in clock ticks, of all its threads (exited ones included).
    pub cpu_ticks: u64,
    /// When it started, in ticks after boot: a different value under the same
    /// pid means the pid was reused by another process.
    pub start_ticks: u64,
}

impl ProcessTimes {
    pub(crate) fn from_stat(stat: &Stat) -> ProcessTimes {
        ProcessTimes {
            cpu_ticks: stat.utime.saturating_add(stat.stime),
            start_ticks: stat.starttime,
        }
    }
}

/// /proc/PID/stat text through procfs-core's `Stat` parser.
#[cfg(test)]
fn parse_pid_stat(text: &str) -> Result<ProcessTimes, String> {
    if !stat_shape_ok(text) {
        return Err("/proc/PID/stat: expected `PID (COMMAND) STATE …`".to_string());
    }
    Stat::from_read(text.as_bytes())
        .map(|stat| ProcessTimes::from_stat(&stat))
        .map_err(|e| format!("/proc/PID/stat: {e}"))
}

/// procfs-core slices at the first `(` minus one and the last `)` plus two:
/// `PID (` must open the text and `) ` must follow the command.
#[cfg(test)]
fn stat_shape_ok(text: &str) -> bool {
    let (text, bytes) = (text.trim(), text.trim().as_bytes());
    match (text.find('('), text.rfind(')')) {
        (Some(open), Some(close)) => {
            open > 0
                && bytes[open - 1] == b' '
                && close > open
                && bytes.get(close + 1) == Some(&b' ')
        }
        _ => false,
    }
}

/// One thread's /proc/…/schedstat: time on a CPU and time runnable but
/// waiting for one (contention, and on most kernels cgroup throttling), ns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RunTimes {
    pub run_ns: u64,
    pub delay_ns: u64,
}

impl RunTimes {
    pub(crate) fn from_schedstat(s: &Schedstat) -> RunTimes {
        RunTimes {
            run_ns: s.sum_exec_runtime,
            delay_ns: s.run_delay,
        }
    }
}

/// schedstat text through procfs-core's `Schedstat` parser.
#[cfg(test)]
pub(crate) fn parse_schedstat(text: &str) -> Option<RunTimes> {
    Schedstat::from_read(text.as_bytes())
        .ok()
        .map(|s| RunTimes::from_schedstat(&s))
}

/// Run and wait times by thread id, as read from a process's or a cgroup's
/// threads.
pub(crate) type ThreadTimes = HashMap<u32, RunTimes>;

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  247036 61252 9781 561283 1721 0 149 740 30 7\n\
                        cpu0 153510 12163 4689 269981 272 0 57 333 0 0\n\
                        cpu1 93525 49089 5092 291302 1449 0 91 406 0 0\n\
                        intr 1 2 3\nctxt 99\nbtime 1700000000\nprocesses 4242\n\
                        procs_running 3\nprocs_blocked 0\nsoftirq 1 2 3\n";

    #[test]
    fn machine_times_leave_out_idle_iowait_and_guest() {
        let stats = parse_kernel_stats(STAT).expect("real layout");
        let (t, cpus) = machine_times(&stats);
        let total = 247036 + 61252 + 9781 + 561283 + 1721 + 149 + 740;
        assert_eq!(t.total, total);
        assert_eq!(t.busy, total - 561283 - 1721);
        assert_eq!(cpus, 2);
    }

    #[test]
    fn an_old_kernel_with_four_cpu_fields_parses() {
        let stats = parse_kernel_stats("cpu 10 0 5 85\nctxt 1\nbtime 2\nprocesses 3\n")
            .expect("four fields");
        assert_eq!(
            machine_times(&stats),
            (
                MachineTimes {
                    busy: 15,
                    total: 100
                },
                1
            )
        );
    }

    #[test]
    fn bad_proc_stat_is_an_error() {
        for text in [
            "",
            "intr 1\n",
            "cpu 1 2 3\nctxt 1\nbtime 2\nprocesses 3\n",
            "cpu 1 2 x 4\n",
            "cpu0 1 2 3 4\n",
        ] {
            assert!(parse_kernel_stats(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn psi_total_is_read_from_the_some_line() {
        let text = "some avg10=1.30 avg60=2.24 avg300=1.63 total=302226690\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(parse_psi_some_total_us(text), Some(302226690));
        for bad in [
            "some avg10=1.0\n",
            "some total=-4\n",
            "",
            "some",
            "some\n",
            "some ü",
            "full avg10=0 total=1",
        ] {
            assert_eq!(parse_psi_some_total_us(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn pid_stat_counts_fields_after_a_command_with_spaces_and_parens() {
        let text = "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 0 0 20 0 3 0 987654 1000000 100 18446744073709551615 \
                    1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        let t = parse_pid_stat(text).expect("real layout");
        assert_eq!(
            t,
            ProcessTimes {
                cpu_ticks: 300,
                start_ticks: 987654
            }
        );
    }

    #[test]
    fn bad_pid_stat_is_an_error_not_a_panic() {
        let cases = [
            "",
            "(",
            ")",
            "(x) S",
            ") (",
            "1 (x)",
            "1 (x) S 1 2 3",
            "1 (x) S 1 1 1 0 -1 0 0 0 0 0 ten 50 0 0 20 0 3 0 9",
            "\u{0}\u{ff}))) ü",
            "1 (ü) ",
            "1 (x) S )",
            "(x) 1 2",
        ];
        for text in cases {
            assert!(parse_pid_stat(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn schedstat_is_run_time_then_wait_time() {
        let want = RunTimes {
            run_ns: 80585495,
            delay_ns: 19014831,
        };
        assert_eq!(parse_schedstat("80585495 19014831 616\n"), Some(want));
        for bad in ["80585495\n", "1 -2 3", ""] {
            assert_eq!(parse_schedstat(bad), None, "{bad:?}");
        }
    }
}
