//! Reads the cumulative counters of what the daemon measures and keeps the
//! previous reading, so that each sample is a load over the time since the
//! last one.
//!
//! /proc is read through the procfs crate (`KernelStats`, `CpuPressure`,
//! `Process::stat`, each task's `schedstat`); cgroup files through `cgroup.rs`.
//! The arithmetic is in `load.rs`.

use std::time::Instant;

use procfs::process::Process;
use procfs::{CpuPressure, Current, CurrentSI, KernelStats};

use super::cgroup::Cgroup;
use super::load::{
    self, Capacity, CgroupCounters, Load, MachineCounters, ProcessCounters, Queued, Rates,
};
use super::proctext::{self, ProcessTimes, RunTimes, ThreadTimes};

/// Most threads read per sample: a bound on the work of one sample.
pub(crate) const MAX_THREADS: usize = 4096;

/// What to measure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The whole machine, from /proc/stat and /proc/pressure/cpu.
    Machine,
    /// One process and its threads.
    Process(u32),
    /// A cpu cgroup: one server's machine in demos and benchmarks.
    Cgroup(Cgroup),
}

/// The cumulative counters at one moment.
#[derive(Clone, Debug)]
enum Counters {
    Machine(MachineCounters),
    Process(ProcessCounters),
    Cgroup {
        counters: CgroupCounters,
        quota_cpus: Option<f64>,
    },
}

/// Reads counters and keeps the previous ones to take deltas.
pub(crate) struct Sampler {
    target: Target,
    /// USER_HZ: the unit of /proc/PID/stat's times.
    ticks_per_second: u64,
    /// CPUs of the machine: a process's share is of all of them, and so is a
    /// cgroup's without a quota.
    cpus: u64,
    last: Option<(Instant, Counters)>,
}

impl Sampler {
    /// Checks that the counters can be read (and, for a process, that it exists).
    pub fn new(target: Target) -> Result<Sampler, super::DaemonError> {
        let measure = super::DaemonError::Measure;
        let stats =
            KernelStats::current().map_err(|e| measure(format!("cannot read /proc/stat: {e}")))?;
        let mut sampler = Sampler {
            target,
            ticks_per_second: procfs::ticks_per_second().max(1),
            cpus: proctext::machine_times(&stats).1,
            last: None,
        };
        let now = sampler.read_counters().map_err(measure)?;
        sampler.last = Some((Instant::now(), now));
        Ok(sampler)
    }

    /// The load since the previous call, or `Ok(None)` when there is no usable
    /// previous reading (the first after the process came back, or its pid was
    /// reused). An error means the counters cannot be read (the process or the
    /// cgroup is gone); the next reading then starts afresh.
    pub fn sample(&mut self) -> Result<Option<Load>, super::DaemonError> {
        let now = match self.read_counters() {
            Ok(now) => now,
            Err(e) => {
                self.last = None;
                return Err(super::DaemonError::Measure(e));
            }
        };
        let at = Instant::now();
        let load = self.last.as_ref().and_then(|(then, before)| {
            let wall = at.saturating_duration_since(*then);
            self.load_between(before, &now, wall.as_nanos() as u64)
        });
        self.last = Some((at, now));
        Ok(load)
    }

    fn load_between(&self, before: &Counters, now: &Counters, wall_ns: u64) -> Option<Load> {
        match (before, now) {
            (Counters::Machine(before), Counters::Machine(now)) => {
                Some(load::machine_load(*before, *now, wall_ns / 1000))
            }
            (Counters::Process(before), Counters::Process(now))
                if before.times.start_ticks == now.times.start_ticks =>
            {
                let rates = Rates {
                    ticks_per_second: self.ticks_per_second,
                    cpus: self.cpus,
                    wall_ns,
                };
                Some(load::process_load(before, now, rates))
            }
            (
                Counters::Cgroup {
                    counters: before, ..
                },
                Counters::Cgroup {
                    counters: now,
                    quota_cpus,
                },
            ) => {
                let capacity = Capacity {
                    cpus: self.cpus,
                    quota_cpus: *quota_cpus,
                    wall_ns,
                };
                log::debug!(
                    "cgroup: throttled in {} of {} periods",
                    now.stat
                        .nr_throttled
                        .saturating_sub(before.stat.nr_throttled),
                    now.stat.nr_periods.saturating_sub(before.stat.nr_periods)
                );
                Some(load::cgroup_load(before, now, capacity))
            }
            _ => None,
        }
    }

    fn read_counters(&self) -> Result<Counters, String> {
        match &self.target {
            Target::Machine => {
                let stats =
                    KernelStats::current().map_err(|e| format!("cannot read /proc/stat: {e}"))?;
                Ok(Counters::Machine(MachineCounters {
                    times: proctext::machine_times(&stats).0,
                    psi_some_us: CpuPressure::current().ok().map(|p| p.some.total),
                }))
            }
            Target::Process(pid) => {
                let gone = || format!("process {pid} is gone");
                let process = i32::try_from(*pid)
                    .ok()
                    .and_then(|p| Process::new(p).ok())
                    .ok_or_else(gone)?;
                let stat = process.stat().map_err(|_| gone())?;
                Ok(Counters::Process(ProcessCounters {
                    times: ProcessTimes::from_stat(&stat),
                    threads: process_threads(&process),
                }))
            }
            Target::Cgroup(cgroup) => {
                let gone = |e: super::DaemonError| {
                    format!(
                        "cgroup {} is gone or unreadable: {e}",
                        cgroup.dir().display()
                    )
                };
                let stat = cgroup.cpu_stat().map_err(gone)?;
                let queued = match cgroup {
                    Cgroup::V2 { .. } => Queued::PressureUs(cgroup.pressure_some_us()),
                    Cgroup::V1 { .. } => Queued::Threads(cgroup_threads(cgroup).map_err(gone)?),
                };
                let quota_cpus = cgroup.quota_cpus().map_err(gone)?;
                Ok(Counters::Cgroup {
                    counters: CgroupCounters { stat, queued },
                    quota_cpus,
                })
            }
        }
    }
}

/// The run and wait times of each thread of `process` that exists now. A
/// thread that exits between listing and reading is skipped: threads come and go.
fn process_threads(process: &Process) -> ThreadTimes {
    let Ok(tasks) = process.tasks() else {
        return ThreadTimes::new();
    };
    tasks
        .flatten()
        .take(MAX_THREADS)
        .filter_map(|task| {
            Some((
                u32::try_from(task.tid).ok()?,
                RunTimes::from_schedstat(&task.schedstat().ok()?),
            ))
        })
        .collect()
}

/// The run and wait times of the threads in a cgroup, from /proc/TID/schedstat.
fn cgroup_threads(cgroup: &Cgroup) -> Result<ThreadTimes, super::DaemonError> {
    let tids = cgroup.thread_ids(MAX_THREADS)?;
    Ok(tids
        .into_iter()
        .filter_map(|tid| {
            let schedstat = Process::new(i32::try_from(tid).ok()?)
                .ok()?
                .schedstat()
                .ok()?;
            Some((tid, RunTimes::from_schedstat(&schedstat)))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::DaemonError;

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
    fn sampling_the_machine_gives_percentages() {
        let mut sampler = Sampler::new(Target::Machine).expect("/proc/stat");
        std::thread::sleep(std::time::Duration::from_millis(30));
        let load = sampler.sample().expect("readable").expect("has a baseline");
        assert!((0.0..=100.0).contains(&load.cpu) && (0.0..=100.0).contains(&load.wait));
    }

    #[test]
    fn a_missing_process_is_refused_at_start() {
        // Pids are below 2^22 on Linux; this one cannot exist.
        let err = Sampler::new(Target::Process(u32::MAX))
            .err()
            .expect("no such pid");
        assert_eq!(
            err,
            DaemonError::Measure(format!("process {} is gone", u32::MAX))
        );
    }
}
