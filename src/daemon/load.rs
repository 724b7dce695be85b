//! The load arithmetic: cumulative counters at two moments in, `cpu` and
//! `wait` out, each a percentage in 0..=100. Pure, so every formula is tested
//! here on numbers.
//!
//! `wait` is the same quantity in every mode: the share of the server's
//! runnable time spent not running (queued for a CPU, or throttled by a quota),
//! `not_running / (running + not_running)` over the interval (`wait_percent`).
//! It is a ratio of two times, so it cannot saturate the way a sum of many
//! threads' delays over wall time did. `cpu` is CPU used as a share of what the
//! server may use: all CPUs of the machine, or a cgroup's quota.
//!
//! Counters can go backwards (a thread exits and takes its share with it, a
//! pid is reused, a counter is reset): every delta saturates at zero, and every
//! result is finite and clamped to 0..=100.

use super::cgroup::CpuStat;
use super::proctext::{MachineTimes, ProcessTimes, RunTimes, ThreadTimes};

/// One sample, as sent in a report.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Load {
    pub cpu: f64,
    pub wait: f64,
}

/// `part` as a percentage of `whole`, clamped to 0..=100; 0 when `whole` is not
/// above 0 or either is not finite.
pub fn percent(part: f64, whole: f64) -> f64 {
    let value = part / whole * 100.0;
    if whole > 0.0 && value.is_finite() {
        value.clamp(0.0, 100.0)
    } else {
        0.0
    }
}

/// The share of runnable time spent not running: 0 when nothing was runnable.
pub(crate) fn wait_percent(running_ns: u64, not_running_ns: u64) -> f64 {
    let not_running = not_running_ns as f64;
    percent(not_running, running_ns as f64 + not_running)
}

/// The whole machine's counters: /proc/stat and /proc/pressure/cpu.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MachineCounters {
    pub times: MachineTimes,
    /// None when the kernel has no /proc/pressure/cpu.
    pub psi_some_us: Option<u64>,
}

/// Whole machine. `cpu` = busy share of all CPUs' time (/proc/stat deltas).
/// `wait`: PSI's `some` says for how long at least one thread waited for a CPU
/// (as a share of the busy CPUs' time: the kernel weighs each CPU by its
/// non-idle time), not how many did. Counting one waiting thread beside each
/// running one gives `some / (wall + some)`: a lower bound of the threads'
/// share, exact when at most one thread waits per CPU, reaching 50 when every
/// busy CPU always has one queued. 0 without PSI.
pub(crate) fn machine_load(before: MachineCounters, after: MachineCounters, wall_us: u64) -> Load {
    let busy = after.times.busy.saturating_sub(before.times.busy);
    let total = after.times.total.saturating_sub(before.times.total);
    let some_us = match (before.psi_some_us, after.psi_some_us) {
        (Some(b), Some(a)) => a.saturating_sub(b).min(wall_us),
        _ => 0,
    };
    Load {
        cpu: percent(busy as f64, total as f64),
        wait: wait_percent(wall_us, some_us),
    }
}

/// A process's counters: /proc/PID/stat and its threads' schedstat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProcessCounters {
    pub times: ProcessTimes,
    pub threads: ThreadTimes,
}

/// The units a process's counters need to become percentages.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rates {
    pub ticks_per_second: u64,
    pub cpus: u64,
    pub wall_ns: u64,
}

/// One process. `cpu` = its utime + stime over wall time times the number of
/// CPUs (a share of the whole machine, as in machine mode). `wait` = its
/// threads' run-queue delay over their run time plus that delay
/// (`wait_percent` of the schedstat sums).
pub(crate) fn process_load(
    before: &ProcessCounters,
    after: &ProcessCounters,
    rates: Rates,
) -> Load {
    let ns_per_tick = 1_000_000_000 / rates.ticks_per_second.max(1);
    let cpu_ns = after
        .times
        .cpu_ticks
        .saturating_sub(before.times.cpu_ticks)
        .saturating_mul(ns_per_tick);
    let capacity_ns = rates.wall_ns as f64 * rates.cpus.max(1) as f64;
    let threads = thread_deltas(&before.threads, &after.threads);
    Load {
        cpu: percent(cpu_ns as f64, capacity_ns),
        wait: wait_percent(threads.run_ns, threads.delay_ns),
    }
}

/// Run and delay time added since `before`, summed per thread: a thread that
/// exited takes nothing away, and one born since counts from zero.
pub(crate) fn thread_deltas(before: &ThreadTimes, after: &ThreadTimes) -> RunTimes {
    after.iter().fold(RunTimes::default(), |sum, (tid, now)| {
        let then = before.get(tid).copied().unwrap_or_default();
        RunTimes {
            run_ns: sum
                .run_ns
                .saturating_add(now.run_ns.saturating_sub(then.run_ns)),
            delay_ns: sum
                .delay_ns
                .saturating_add(now.delay_ns.saturating_sub(then.delay_ns)),
        }
    })
}

/// Where a cgroup's run-queue wait (apart from throttling) comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Queued {
    /// v2: the `some` total of its cpu.pressure, µs (None without PSI).
    PressureUs(Option<u64>),
    /// v1, which has no cpu.pressure: its threads' schedstat.
    Threads(ThreadTimes),
}

/// A cgroup's counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CgroupCounters {
    pub stat: CpuStat,
    pub queued: Queued,
}

/// What a cgroup may use over the interval.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Capacity {
    /// CPUs of the machine.
    pub cpus: u64,
    /// Its quota in CPUs (the smallest along its ancestors), if any.
    pub quota_cpus: Option<f64>,
    pub wall_ns: u64,
}

/// A cpu cgroup. `cpu` = its usage over what its quota allows in the interval
/// (a cgroup running at its quota is full: 100), or over all CPUs without a
/// quota. `wait` = `wait_percent(usage, max(throttled, queued))`: throttled
/// time from cpu.stat, queued time from cpu.pressure `some` (v2) or its
/// threads' schedstat delay (v1). Both of the latter already include
/// throttled time on most kernels, so the larger is taken, not the sum.
pub(crate) fn cgroup_load(
    before: &CgroupCounters,
    after: &CgroupCounters,
    capacity: Capacity,
) -> Load {
    let usage_ns = after.stat.usage_ns.saturating_sub(before.stat.usage_ns);
    let throttled_ns = after
        .stat
        .throttled_ns
        .saturating_sub(before.stat.throttled_ns);
    let queued_ns = match (&before.queued, &after.queued) {
        (Queued::PressureUs(Some(b)), Queued::PressureUs(Some(a))) => {
            a.saturating_sub(*b).saturating_mul(1000)
        }
        (Queued::Threads(b), Queued::Threads(a)) => thread_deltas(b, a).delay_ns,
        _ => 0,
    };
    let machine = capacity.cpus.max(1) as f64;
    let allowed_cpus = capacity
        .quota_cpus
        .filter(|q| *q > 0.0)
        .map_or(machine, |q| q.min(machine));
    Load {
        cpu: percent(usage_ns as f64, capacity.wall_ns as f64 * allowed_cpus),
        wait: wait_percent(usage_ns, throttled_ns.max(queued_ns)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(busy: u64, total: u64, psi: Option<u64>) -> MachineCounters {
        MachineCounters {
            times: MachineTimes { busy, total },
            psi_some_us: psi,
        }
    }

    #[test]
    fn machine_cpu_is_the_busy_share_and_wait_counts_one_waiter_per_busy_cpu() {
        // 250 ms of `some` in 1 s: 250 / (1000 + 250) = 20 %.
        let load = machine_load(
            machine(100, 1000, Some(0)),
            machine(400, 2000, Some(250_000)),
            1_000_000,
        );
        assert_eq!(
            load,
            Load {
                cpu: 30.0,
                wait: 20.0
            }
        );
        // Someone always waiting: one waiter beside each runner, 50 %, not 100.
        let load = machine_load(
            machine(0, 100, Some(0)),
            machine(100, 200, Some(1_000_000)),
            1_000_000,
        );
        assert_eq!(
            load,
            Load {
                cpu: 100.0,
                wait: 50.0
            }
        );
    }

    #[test]
    fn machine_counters_going_backwards_give_zero_not_garbage() {
        let load = machine_load(
            machine(500, 2000, Some(9)),
            machine(400, 1000, Some(1)),
            1_000_000,
        );
        assert_eq!(
            load,
            Load {
                cpu: 0.0,
                wait: 0.0
            }
        );
        let idle = machine_load(machine(5, 5, None), machine(5, 5, None), 0);
        assert_eq!(
            idle,
            Load {
                cpu: 0.0,
                wait: 0.0
            },
            "no time passed: zero, not NaN"
        );
        let wrapped = machine_load(
            machine(u64::MAX, u64::MAX, Some(u64::MAX)),
            machine(3, 7, Some(2)),
            1,
        );
        assert_eq!(
            wrapped,
            Load {
                cpu: 0.0,
                wait: 0.0
            },
            "a wrapped counter reads as no time"
        );
    }

    #[test]
    fn pressure_appearing_or_vanishing_gives_zero_wait() {
        let load = machine_load(machine(0, 100, None), machine(50, 200, Some(10)), 1000);
        assert_eq!(
            load,
            Load {
                cpu: 50.0,
                wait: 0.0
            }
        );
    }

    fn rates(cpus: u64, wall_ms: u64) -> Rates {
        Rates {
            ticks_per_second: 100,
            cpus,
            wall_ns: wall_ms * 1_000_000,
        }
    }

    fn process(cpu_ticks: u64, threads: &[(u32, u64, u64)]) -> ProcessCounters {
        let threads = threads
            .iter()
            .map(|&(tid, run_ns, delay_ns)| (tid, RunTimes { run_ns, delay_ns }))
            .collect();
        ProcessCounters {
            times: ProcessTimes {
                cpu_ticks,
                start_ticks: 7,
            },
            threads,
        }
    }

    #[test]
    fn process_cpu_is_a_share_of_all_cpus() {
        // 50 ticks = 500 ms of CPU in 1 s on 2 CPUs: a quarter of the machine.
        let load = process_load(&process(10, &[]), &process(60, &[]), rates(2, 1000));
        assert_eq!(
            load,
            Load {
                cpu: 25.0,
                wait: 0.0
            }
        );
        let saturated = process_load(&process(0, &[]), &process(1000, &[]), rates(2, 1000));
        assert_eq!(saturated.cpu, 100.0, "clamped");
    }

    #[test]
    fn process_wait_is_the_delay_share_of_runnable_time_and_does_not_saturate() {
        // Eight threads, each ran 100 ms and waited 100 ms in 1 s on 1 CPU: the
        // old sum over wall time said 800 % (clamped to 100); the share is 50.
        let after: Vec<_> = (1..=8).map(|tid| (tid, 100_000_000, 100_000_000)).collect();
        let load = process_load(&process(0, &[]), &process(80, &after), rates(1, 1000));
        assert_eq!(
            load,
            Load {
                cpu: 80.0,
                wait: 50.0
            }
        );
    }

    #[test]
    fn thread_times_are_per_thread_and_survive_exits_births_and_going_backwards() {
        // Thread 2 exited, thread 3 was born (ran 100, waited 100), thread 1 ran
        // 200 more and waited 200 more. Summing totals would subtract thread 2.
        let before = process(0, &[(1, 100, 100), (2, 900, 900)]);
        let after = process(0, &[(1, 300, 300), (3, 100, 100)]);
        assert_eq!(
            thread_deltas(&before.threads, &after.threads),
            RunTimes {
                run_ns: 300,
                delay_ns: 300
            }
        );
        let back = process(0, &[(1, 0, 0)]);
        let load = process_load(&before, &back, rates(4, 100));
        assert_eq!(
            load,
            Load {
                cpu: 0.0,
                wait: 0.0
            },
            "backwards counters saturate"
        );
    }

    fn cgroup(usage_ms: u64, throttled_ms: u64, queued: Queued) -> CgroupCounters {
        let ms = 1_000_000;
        let stat = CpuStat {
            usage_ns: usage_ms * ms,
            throttled_ns: throttled_ms * ms,
            nr_periods: 0,
            nr_throttled: 0,
        };
        CgroupCounters { stat, queued }
    }

    fn capacity(cpus: u64, quota_cpus: Option<f64>) -> Capacity {
        Capacity {
            cpus,
            quota_cpus,
            wall_ns: 1_000_000_000,
        }
    }

    #[test]
    fn a_cgroup_at_its_quota_is_full_and_mostly_waiting() {
        // 25 % quota, a busy thread: 250 ms used, 750 ms throttled in 1 s.
        let before = cgroup(0, 0, Queued::PressureUs(Some(0)));
        let after = cgroup(250, 750, Queued::PressureUs(Some(700_000)));
        let load = cgroup_load(&before, &after, capacity(2, Some(0.25)));
        assert_eq!(
            load,
            Load {
                cpu: 100.0,
                wait: 75.0
            }
        );
        // The same usage without a quota is an eighth of a 2-CPU machine.
        let free = cgroup_load(
            &before,
            &cgroup(250, 0, Queued::PressureUs(Some(0))),
            capacity(2, None),
        );
        assert_eq!(
            free,
            Load {
                cpu: 12.5,
                wait: 0.0
            }
        );
    }

    #[test]
    fn cgroup_queueing_counts_when_larger_than_throttling_never_both() {
        let before = cgroup(0, 0, Queued::Threads(process(0, &[(1, 0, 0)]).threads));
        let after = cgroup(
            500,
            100,
            Queued::Threads(process(0, &[(1, 500_000_000, 500_000_000)]).threads),
        );
        let load = cgroup_load(&before, &after, capacity(1, None));
        assert_eq!(
            load,
            Load {
                cpu: 50.0,
                wait: 50.0
            },
            "500 ms queued beats 100 ms throttled"
        );
    }

    #[test]
    fn cgroup_quota_above_the_machine_and_odd_counters_stay_in_range() {
        let before = cgroup(0, 0, Queued::PressureUs(None));
        let after = cgroup(1000, 0, Queued::PressureUs(Some(5)));
        let load = cgroup_load(&before, &after, capacity(2, Some(8.0)));
        assert_eq!(
            load,
            Load {
                cpu: 50.0,
                wait: 0.0
            },
            "a quota of 8 CPUs on 2 is 2"
        );
        let zero_quota = cgroup_load(&before, &after, capacity(2, Some(0.0)));
        assert_eq!(zero_quota.cpu, 50.0, "a zero quota is treated as none");
        let back = cgroup_load(&after, &before, capacity(2, Some(0.25)));
        assert_eq!(
            back,
            Load {
                cpu: 0.0,
                wait: 0.0
            }
        );
        let no_time = cgroup_load(
            &before,
            &after,
            Capacity {
                wall_ns: 0,
                ..capacity(2, None)
            },
        );
        assert_eq!(
            no_time.cpu, 0.0,
            "no time passed: zero, not NaN or infinity"
        );
        let mixed = cgroup_load(
            &before,
            &cgroup(0, 0, Queued::Threads(ThreadTimes::new())),
            capacity(1, None),
        );
        assert_eq!(
            mixed,
            Load {
                cpu: 0.0,
                wait: 0.0
            }
        );
    }

    #[test]
    fn percent_is_bounded_and_never_nan() {
        assert_eq!(percent(1.0, 0.0), 0.0);
        assert_eq!(percent(u64::MAX as f64, 1.0), 100.0);
        assert_eq!(percent(0.0, u64::MAX as f64), 0.0);
        assert_eq!(percent(f64::NAN, 1.0), 0.0);
        assert_eq!(percent(1.0, f64::INFINITY), 0.0);
        assert_eq!(percent(-5.0, 1.0), 0.0);
        assert_eq!(wait_percent(0, 0), 0.0);
        assert_eq!(wait_percent(u64::MAX, u64::MAX), 50.0);
        assert_eq!(wait_percent(0, 7), 100.0);
    }
}
