//! Turns cumulative /proc counters into a load: `cpu` and `wait`, percent of
//! all CPUs, 0..=100, over the time since the previous sample.
//!
//! The arithmetic is pure (`machine_load`, `process_load`) and tested here; the
//! `Sampler` only reads files and keeps the previous counters. Counters can go
//! backwards (a thread exits and takes its share with it, a pid is reused):
//! deltas saturate at zero and the results are clamped, so a sample is never
//! negative, above 100 or NaN.

use std::path::PathBuf;
use std::time::Instant;

use super::proctext::{self, MachineTimes, ProcessTimes, ThreadWaits};

/// Most threads read per sample: a bound on the work of one sample.
pub const MAX_THREADS: usize = 4096;

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The whole machine, from /proc/stat.
    Machine,
    /// One process and its threads.
    Process(u32),
}

/// One sample, as sent in a report.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Load {
    pub cpu: f64,
    pub wait: f64,
}

/// The cumulative counters at one moment.
#[derive(Clone, Debug)]
enum Counters {
    Machine {
        times: MachineTimes,
        /// None when the kernel has no /proc/pressure/cpu.
        psi_some_us: Option<u64>,
    },
    Process {
        times: ProcessTimes,
        waits: ThreadWaits,
    },
}

/// Reads counters and keeps the previous ones to take deltas.
pub struct Sampler {
    target: Target,
    /// Normally /proc; tests may point elsewhere.
    proc_root: PathBuf,
    /// USER_HZ: the unit of /proc/PID/stat's times.
    ticks_per_second: u64,
    /// CPUs of the machine: a process's share is of all of them.
    cpus: u64,
    last: Option<(Instant, Counters)>,
}

impl Sampler {
    /// Checks that the counters can be read (and, for a process, that it exists).
    pub fn new(target: Target) -> Result<Sampler, String> {
        let proc_root = PathBuf::from("/proc");
        let stat = read(&proc_root.join("stat"))?;
        let mut sampler = Sampler {
            target,
            proc_root,
            ticks_per_second: procfs::ticks_per_second().max(1),
            cpus: proctext::count_cpus(&stat),
            last: None,
        };
        let now = sampler.read_counters()?;
        sampler.last = Some((Instant::now(), now));
        Ok(sampler)
    }

    /// The load since the previous call, or `Ok(None)` when there is no usable
    /// previous reading (the first after the process came back, or its pid was
    /// reused). An error means the counters cannot be read (the process is gone);
    /// the next reading then starts afresh.
    pub fn sample(&mut self) -> Result<Option<Load>, String> {
        let now = match self.read_counters() {
            Ok(now) => now,
            Err(e) => {
                self.last = None;
                return Err(e);
            }
        };
        let at = Instant::now();
        let load = match (&self.last, &now) {
            (
                Some((then, Counters::Machine { times, psi_some_us })),
                Counters::Machine {
                    times: times_now,
                    psi_some_us: psi_now,
                },
            ) => {
                let wall_us = at.saturating_duration_since(*then).as_micros() as u64;
                let before = (*times, *psi_some_us);
                Some(machine_load(before, (*times_now, *psi_now), wall_us))
            }
            (
                Some((then, Counters::Process { times, waits })),
                Counters::Process {
                    times: times_now,
                    waits: waits_now,
                },
            ) if times.start_ticks == times_now.start_ticks => {
                let rates = Rates {
                    ticks_per_second: self.ticks_per_second,
                    cpus: self.cpus,
                    wall_ns: at.saturating_duration_since(*then).as_nanos() as u64,
                };
                Some(process_load((times, waits), (times_now, waits_now), rates))
            }
            _ => None,
        };
        self.last = Some((at, now));
        Ok(load)
    }

    fn read_counters(&self) -> Result<Counters, String> {
        match self.target {
            Target::Machine => {
                let stat = read(&self.proc_root.join("stat"))?;
                let psi = std::fs::read_to_string(self.proc_root.join("pressure/cpu")).ok();
                Ok(Counters::Machine {
                    times: proctext::parse_machine_times(&stat)?,
                    psi_some_us: psi.as_deref().and_then(proctext::parse_psi_some_total_us),
                })
            }
            Target::Process(pid) => {
                let dir = self.proc_root.join(pid.to_string());
                let stat = std::fs::read_to_string(dir.join("stat"))
                    .map_err(|_| format!("process {pid} is gone"))?;
                Ok(Counters::Process {
                    times: proctext::parse_pid_stat(&stat)?,
                    waits: read_thread_waits(&dir),
                })
            }
        }
    }
}

fn read(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The run-queue wait of each thread that exists now. A thread that exits
/// between listing and reading is skipped: threads come and go.
fn read_thread_waits(process_dir: &std::path::Path) -> ThreadWaits {
    let mut waits = ThreadWaits::new();
    let Ok(entries) = std::fs::read_dir(process_dir.join("task")) else {
        return waits;
    };
    for entry in entries.flatten().take(MAX_THREADS) {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path().join("schedstat")).unwrap_or_default();
        if let Some(wait_ns) = proctext::parse_schedstat_wait_ns(&text) {
            waits.insert(tid, wait_ns);
        }
    }
    waits
}

/// `part` as a percentage of `whole`, clamped to 0..=100; 0 when `whole` is 0.
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    let value = part as f64 / whole as f64 * 100.0;
    if value.is_finite() {
        value.clamp(0.0, 100.0)
    } else {
        0.0
    }
}

/// Machine load: busy share of all CPU time, and the share of wall time in
/// which some task waited for a CPU (0 without /proc/pressure/cpu).
pub fn machine_load(
    before: (MachineTimes, Option<u64>),
    after: (MachineTimes, Option<u64>),
    wall_us: u64,
) -> Load {
    let busy = after.0.busy.saturating_sub(before.0.busy);
    let total = after.0.total.saturating_sub(before.0.total);
    let wait = match (before.1, after.1) {
        (Some(b), Some(a)) => percent(a.saturating_sub(b), wall_us),
        _ => 0.0,
    };
    Load {
        cpu: percent(busy, total),
        wait,
    }
}

/// The units a process's counters need to become percentages.
#[derive(Clone, Copy, Debug)]
pub struct Rates {
    pub ticks_per_second: u64,
    pub cpus: u64,
    pub wall_ns: u64,
}

/// Process load: CPU time used and run-queue time waited, each over wall time
/// times the number of CPUs. A thread new since `before` counts from zero.
pub fn process_load(
    before: (&ProcessTimes, &ThreadWaits),
    after: (&ProcessTimes, &ThreadWaits),
    rates: Rates,
) -> Load {
    let ns_per_tick = 1_000_000_000 / rates.ticks_per_second.max(1);
    let cpu_ns = after
        .0
        .cpu_ticks
        .saturating_sub(before.0.cpu_ticks)
        .saturating_mul(ns_per_tick);
    let wait_ns = after.1.iter().fold(0u64, |sum, (tid, now)| {
        let then = before.1.get(tid).copied().unwrap_or(0);
        sum.saturating_add(now.saturating_sub(then))
    });
    let capacity_ns = rates.wall_ns.saturating_mul(rates.cpus.max(1));
    Load {
        cpu: percent(cpu_ns, capacity_ns),
        wait: percent(wait_ns, capacity_ns),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(busy: u64, total: u64) -> MachineTimes {
        MachineTimes { busy, total }
    }

    #[test]
    fn machine_cpu_is_the_busy_share_of_the_delta() {
        let load = machine_load(
            (times(100, 1000), Some(0)),
            (times(400, 2000), Some(250_000)),
            1_000_000,
        );
        assert_eq!(
            load,
            Load {
                cpu: 30.0,
                wait: 25.0
            }
        );
    }

    #[test]
    fn machine_counters_going_backwards_give_zero_not_garbage() {
        let load = machine_load(
            (times(500, 2000), Some(9)),
            (times(400, 1000), Some(1)),
            1_000_000,
        );
        assert_eq!(
            load,
            Load {
                cpu: 0.0,
                wait: 0.0
            }
        );
        let idle = machine_load((times(5, 5), None), (times(5, 5), None), 0);
        assert_eq!(
            idle,
            Load {
                cpu: 0.0,
                wait: 0.0
            },
            "no time passed: zero, not NaN"
        );
    }

    #[test]
    fn pressure_appearing_or_vanishing_gives_zero_wait() {
        let load = machine_load((times(0, 100), None), (times(50, 200), Some(10)), 1000);
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

    fn process(cpu_ticks: u64) -> ProcessTimes {
        ProcessTimes {
            cpu_ticks,
            start_ticks: 7,
        }
    }

    #[test]
    fn process_cpu_is_a_share_of_all_cpus() {
        // 50 ticks = 500 ms of CPU in 1 s on 2 CPUs: a quarter of the machine.
        let none = ThreadWaits::new();
        let load = process_load((&process(10), &none), (&process(60), &none), rates(2, 1000));
        assert_eq!(
            load,
            Load {
                cpu: 25.0,
                wait: 0.0
            }
        );
        let saturated = process_load(
            (&process(0), &none),
            (&process(1000), &none),
            rates(2, 1000),
        );
        assert_eq!(saturated.cpu, 100.0, "clamped");
    }

    #[test]
    fn thread_waits_sum_per_thread_and_survive_exits_and_births() {
        let before = ThreadWaits::from([(1, 100_000_000), (2, 900_000_000)]);
        // Thread 2 exited (its wait vanished), thread 3 was born and waited 100 ms,
        // thread 1 waited 200 ms more. Summing totals would say -600 ms.
        let after = ThreadWaits::from([(1, 300_000_000), (3, 100_000_000)]);
        let load = process_load(
            (&process(0), &before),
            (&process(0), &after),
            rates(1, 1000),
        );
        assert_eq!(load.cpu, 0.0);
        assert!((load.wait - 30.0).abs() < 1e-9, "{load:?}");
        let back = ThreadWaits::from([(1, 0)]);
        let load = process_load((&process(9), &before), (&process(3), &back), rates(4, 100));
        assert_eq!(
            load,
            Load {
                cpu: 0.0,
                wait: 0.0
            },
            "backwards counters saturate"
        );
    }

    #[test]
    fn percent_is_bounded_and_never_nan() {
        assert_eq!(percent(1, 0), 0.0);
        assert_eq!(percent(u64::MAX, 1), 100.0);
        assert_eq!(percent(0, u64::MAX), 0.0);
    }

    #[test]
    fn sampling_this_process_gives_percentages() {
        let mut sampler = Sampler::new(Target::Process(std::process::id())).expect("we exist");
        let spin_until = Instant::now() + std::time::Duration::from_millis(50);
        while Instant::now() < spin_until {
            std::hint::black_box(0u64);
        }
        let load = sampler
            .sample()
            .expect("still here")
            .expect("has a baseline");
        assert!((0.0..=100.0).contains(&load.cpu) && (0.0..=100.0).contains(&load.wait));
    }

    #[test]
    fn a_missing_process_is_refused_at_start() {
        // Pids are below 2^22 on Linux; this one cannot exist.
        let err = Sampler::new(Target::Process(u32::MAX))
            .err()
            .expect("no such pid");
        assert_eq!(err, format!("process {} is gone", u32::MAX));
    }
}
