//! Parsers for the few /proc files the daemon reads, as pure functions of the
//! text so that each one is tested on fixtures.
//!
//! They are written here rather than taken from procfs-core because they must be
//! total: procfs-core's `/proc/PID/stat` parser slices the text at offsets it has
//! not checked, and its `/proc/stat` parser demands lines (`btime`, `ctxt`) that
//! the load does not need. Every parser here answers an error or `None` on
//! garbage, never a panic. Every value is a cumulative counter; the deltas are
//! taken in `sample.rs`.

use std::collections::HashMap;

/// Whole-machine CPU time from the `cpu` line of /proc/stat, in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MachineTimes {
    /// Time the CPUs did work: total minus idle minus iowait.
    pub busy: u64,
    /// user + nice + system + idle + iowait + irq + softirq + steal. `guest`
    /// and `guest_nice` are left out: the kernel already counts them in `user`
    /// and `nice`.
    pub total: u64,
}

/// Reads the aggregate `cpu ` line of /proc/stat. Fields after `idle` are
/// optional (old kernels lack them) and count as zero.
pub fn parse_machine_times(stat: &str) -> Result<MachineTimes, String> {
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or("/proc/stat has no `cpu` line")?;
    let mut fields = [0u64; 8];
    let mut count = 0;
    for (slot, word) in fields.iter_mut().zip(line.split_whitespace().skip(1)) {
        *slot = word
            .parse()
            .map_err(|_| format!("/proc/stat: bad cpu field {word:?}"))?;
        count += 1;
    }
    if count < 4 {
        return Err(format!(
            "/proc/stat: the cpu line has {count} fields, expected at least 4"
        ));
    }
    let total = fields.iter().fold(0u64, |sum, v| sum.saturating_add(*v));
    let idle = fields[3].saturating_add(fields[4]);
    Ok(MachineTimes {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// The number of CPUs /proc/stat lists (`cpu0`, `cpu1`, …), at least 1 so that
/// it can always divide.
pub fn count_cpus(stat: &str) -> u64 {
    let listed = stat
        .lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .and_then(|rest| rest.split(char::is_whitespace).next())
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count();
    (listed as u64).max(1)
}

/// The `total=` (microseconds) of the `some` line of /proc/pressure/cpu: time
/// in which at least one runnable task waited for a CPU.
pub fn parse_psi_some_total_us(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("total="))?
        .parse()
        .ok()
}

/// What /proc/PID/stat says about one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessTimes {
    /// utime + stime, in clock ticks, of all its threads (exited ones included).
    pub cpu_ticks: u64,
    /// When it started, in ticks after boot: a different value under the same
    /// pid means the pid was reused by another process.
    pub start_ticks: u64,
}

/// Reads utime (field 14), stime (15) and starttime (22) of /proc/PID/stat.
/// The command name (field 2) may hold spaces and parentheses, so fields are
/// counted from the last `)`.
pub fn parse_pid_stat(text: &str) -> Result<ProcessTimes, String> {
    let (_, after_comm) = text
        .rsplit_once(')')
        .ok_or("/proc/PID/stat: no `)` after the command name")?;
    // After the `)`, index 0 is field 3 (state), so field k is at index k - 3.
    let fields: Vec<&str> = after_comm.split_whitespace().take(20).collect();
    let field = |k: usize| -> Result<u64, String> {
        let word = fields
            .get(k - 3)
            .ok_or(format!("/proc/PID/stat: field {k} missing"))?;
        word.parse()
            .map_err(|_| format!("/proc/PID/stat: bad field {k} {word:?}"))
    };
    Ok(ProcessTimes {
        cpu_ticks: field(14)?.saturating_add(field(15)?),
        start_ticks: field(22)?,
    })
}

/// The second field of /proc/PID/task/TID/schedstat: nanoseconds the thread
/// spent runnable but waiting for a CPU (contention and cgroup throttling).
pub fn parse_schedstat_wait_ns(text: &str) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Run-queue waits by thread id, as read from one process's task directory.
pub type ThreadWaits = HashMap<u32, u64>;

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  247036 61252 9781 561283 1721 0 149 740 30 7\n\
                        cpu0 153510 12163 4689 269981 272 0 57 333 0 0\n\
                        cpu1 93525 49089 5092 291302 1449 0 91 406 0 0\n\
                        intr 1 2 3\nctxt 99\nbtime 1700000000\n";

    #[test]
    fn machine_times_leave_out_idle_iowait_and_guest() {
        let t = parse_machine_times(STAT).expect("real layout");
        let total = 247036 + 61252 + 9781 + 561283 + 1721 + 149 + 740;
        assert_eq!(t.total, total);
        assert_eq!(t.busy, total - 561283 - 1721);
        assert_eq!(count_cpus(STAT), 2);
    }

    #[test]
    fn an_old_kernel_with_four_cpu_fields_parses() {
        let t = parse_machine_times("cpu 10 0 5 85\n").expect("four fields");
        assert_eq!(
            t,
            MachineTimes {
                busy: 15,
                total: 100
            }
        );
    }

    #[test]
    fn bad_proc_stat_is_an_error() {
        for text in [
            "",
            "intr 1\n",
            "cpu 1 2 3\n",
            "cpu 1 2 x 4\n",
            "cpu0 1 2 3 4\n",
        ] {
            assert!(parse_machine_times(text).is_err(), "{text:?}");
        }
        assert_eq!(count_cpus("garbage"), 1, "never zero: it divides");
        assert_eq!(count_cpus("cpu  1 2 3 4\ncpux 1\ncpu7 1 2 3 4\n"), 1);
    }

    #[test]
    fn psi_total_is_read_from_the_some_line() {
        let text = "some avg10=1.30 avg60=2.24 avg300=1.63 total=302226690\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(parse_psi_some_total_us(text), Some(302226690));
        assert_eq!(parse_psi_some_total_us("some avg10=1.0\n"), None);
        assert_eq!(parse_psi_some_total_us("some total=-4\n"), None);
        assert_eq!(parse_psi_some_total_us(""), None);
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
            "1 (x) S 1 2 3",
            "1 (x) S 1 1 1 0 -1 0 0 0 0 0 ten 50 0 0 20 0 3 0 9",
            "\u{0}\u{ff}))) ü",
        ];
        for text in cases {
            assert!(parse_pid_stat(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn schedstat_wait_is_the_second_field() {
        assert_eq!(
            parse_schedstat_wait_ns("80585495 19014831 616\n"),
            Some(19014831)
        );
        assert_eq!(parse_schedstat_wait_ns("80585495\n"), None);
        assert_eq!(parse_schedstat_wait_ns("1 -2 3"), None);
        assert_eq!(parse_schedstat_wait_ns(""), None);
    }
}
