//! `--cgroup PATH`: finding a cpu cgroup (v2, or v1 with its `cpuacct` twin)
//! and reading its counters.
//!
//! A cgroup with a CPU quota stands for one server's machine in demos and
//! benchmarks, so the daemon reads it the way the whole-machine mode reads
//! /proc/stat and PSI: CPU time used (v2 `cpu.stat` `usage_usec`, v1
//! `cpuacct.usage`), time throttled by the quota (v2 `throttled_usec`, v1
//! `cpu.stat` `throttled_time`), and the quota itself (v2 `cpu.max`, v1
//! `cpu.cfs_quota_us` / `cpu.cfs_period_us`). Cgroup files are not in procfs:
//! the parsers here are small pure functions of the text, tested on fixtures,
//! whose errors name the file. Finding the cgroup (`resolve`) is a start-time
//! check: a path that is not a cpu cgroup is bad usage.

use super::DaemonError;
use std::path::{Path, PathBuf};

/// Where cgroup hierarchies are mounted, from /proc/self/mountinfo.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mounts {
    /// The unified (v2) hierarchy, when mounted.
    pub v2: Option<PathBuf>,
    /// The v1 hierarchy with the `cpu` controller.
    pub v1_cpu: Option<PathBuf>,
    /// The v1 hierarchy with `cpuacct`: the same as `v1_cpu` when co-mounted
    /// (`cpu,cpuacct`), a hierarchy of its own on some hosts.
    pub v1_cpuacct: Option<PathBuf>,
}

impl Mounts {
    /// Picks the cgroup mounts out of `(mount point, fs type, super options)`.
    pub(crate) fn from_entries<'a>(
        entries: impl IntoIterator<Item = (&'a Path, &'a str, Vec<&'a str>)>,
    ) -> Mounts {
        let mut mounts = Mounts::default();
        for (point, fs_type, options) in entries {
            match fs_type {
                "cgroup2" if mounts.v2.is_none() => mounts.v2 = Some(point.to_path_buf()),
                "cgroup" => {
                    if options.contains(&"cpu") && mounts.v1_cpu.is_none() {
                        mounts.v1_cpu = Some(point.to_path_buf());
                    }
                    if options.contains(&"cpuacct") && mounts.v1_cpuacct.is_none() {
                        mounts.v1_cpuacct = Some(point.to_path_buf());
                    }
                }
                _ => {}
            }
        }
        mounts
    }

    /// The cgroup mounts of this process's mount namespace.
    pub fn current() -> Result<Mounts, DaemonError> {
        let infos = procfs::process::Process::myself()
            .and_then(|me| me.mountinfo())
            .map_err(|e| DaemonError::Measure(format!("cannot read /proc/self/mountinfo: {e}")))?;
        Ok(Mounts::from_entries(infos.0.iter().map(|m| {
            let options = m.super_options.keys().map(String::as_str).collect();
            (m.mount_point.as_path(), m.fs_type.as_str(), options)
        })))
    }
}

/// A cpu cgroup, resolved to its directories.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cgroup {
    V2 {
        dir: PathBuf,
        /// The hierarchy's mount point: the quota walk stops there.
        root: PathBuf,
    },
    V1 {
        cpu_dir: PathBuf,
        cpu_root: PathBuf,
        /// Where `cpuacct.usage` is: `cpu_dir` when co-mounted.
        cpuacct_dir: PathBuf,
    },
}

/// One reading of a cgroup's cumulative counters, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CpuStat {
    /// CPU time its tasks used.
    pub usage_ns: u64,
    /// Time its run queues spent throttled by the quota, summed over CPUs.
    pub throttled_ns: u64,
    /// Quota periods, and those in which it was throttled (for the log).
    pub nr_periods: u64,
    pub nr_throttled: u64,
}

/// The rule of `--cgroup`, for error messages.
const EXPECTED: &str = "must be a cpu cgroup directory, absolute under /sys/fs/cgroup \
                        or relative to the cgroup root";

/// Finds the cgroup `path` names. An absolute path is taken as is when it is a
/// directory, else (as /proc/PID/cgroup writes them) relative to the root; a
/// relative path is looked up under the v2 root when that has the cpu
/// controller, else under the v1 cpu root.
pub fn resolve(path: &str, mounts: &Mounts) -> Result<Cgroup, DaemonError> {
    let bad = |why: &str| DaemonError::Flag {
        flag: "--cgroup",
        rule: EXPECTED,
        value: path.to_string(),
        reason: why.to_string(),
    };
    let given = Path::new(path);
    let mut candidates = Vec::new();
    if given.is_absolute() && given.is_dir() {
        candidates.push(given.to_path_buf());
    } else {
        let relative = path.trim_start_matches('/');
        if let Some(root) = mounts.v2.iter().find(|root| has_cpu_controller(root)) {
            candidates.push(root.join(relative));
        }
        if let Some(root) = &mounts.v1_cpu {
            candidates.push(root.join(relative));
        }
    }
    let Some(dir) = candidates.into_iter().find(|dir| dir.is_dir()) else {
        return Err(bad("no such cgroup"));
    };
    classify(&dir, mounts).map_err(|why| bad(&why))
}

/// Tells a v2 cgroup from a v1 cpu cgroup by the files the kernel puts in it.
fn classify(dir: &Path, mounts: &Mounts) -> Result<Cgroup, String> {
    let shown = dir.display();
    if dir.join("cgroup.controllers").is_file() {
        if !has_cpu_controller(dir) {
            return Err(format!(
                "{shown} has no cpu controller (not in cgroup.controllers)"
            ));
        }
        let root = mount_of(dir, mounts.v2.as_deref());
        return Ok(Cgroup::V2 {
            dir: dir.to_path_buf(),
            root,
        });
    }
    if !dir.join("cpu.cfs_quota_us").is_file() {
        return Err(format!(
            "{shown} has no cpu controller (no cpu.cfs_quota_us or cgroup.controllers)"
        ));
    }
    let cpu_root = mount_of(dir, mounts.v1_cpu.as_deref());
    let cpuacct_dir = if dir.join("cpuacct.usage").is_file() {
        dir.to_path_buf()
    } else {
        let relative = dir.strip_prefix(&cpu_root).unwrap_or(Path::new(""));
        let twin = mounts.v1_cpuacct.as_ref().map(|root| root.join(relative));
        match twin {
            Some(twin) if twin.join("cpuacct.usage").is_file() => twin,
            _ => {
                return Err(format!(
                    "{shown} has no cpuacct.usage, here or in the cpuacct hierarchy"
                ))
            }
        }
    };
    Ok(Cgroup::V1 {
        cpu_dir: dir.to_path_buf(),
        cpu_root,
        cpuacct_dir,
    })
}

/// The mount point `dir` lies under, or the directory itself when the mount
/// table does not say (a bind mount, a container).
fn mount_of(dir: &Path, mount: Option<&Path>) -> PathBuf {
    match mount {
        Some(root) if dir.starts_with(root) => root.to_path_buf(),
        _ => dir.to_path_buf(),
    }
}

fn has_cpu_controller(v2_dir: &Path) -> bool {
    std::fs::read_to_string(v2_dir.join("cgroup.controllers"))
        .is_ok_and(|text| text.split_whitespace().any(|c| c == "cpu"))
}

impl Cgroup {
    /// The cgroup's directory: the one holding its `cpu.*` files.
    pub fn dir(&self) -> &Path {
        match self {
            Cgroup::V2 { dir, .. } => dir,
            Cgroup::V1 { cpu_dir, .. } => cpu_dir,
        }
    }

    /// Its counters now.
    pub(crate) fn cpu_stat(&self) -> Result<CpuStat, DaemonError> {
        let reading = || -> Result<CpuStat, String> {
            match self {
                Cgroup::V2 { dir, .. } => parse_v2_cpu_stat(&read(&dir.join("cpu.stat"))?),
                Cgroup::V1 {
                    cpu_dir,
                    cpuacct_dir,
                    ..
                } => {
                    let usage = read(&cpuacct_dir.join("cpuacct.usage"))?;
                    let stat = read(&cpu_dir.join("cpu.stat"))?;
                    parse_v1_cpu_stat(&stat, &usage)
                }
            }
        };
        reading().map_err(DaemonError::Measure)
    }

    /// The `some` total of v2's `cpu.pressure` in µs: time in which at least one
    /// of its tasks was runnable and not running. None on v1 (no such file) and
    /// on kernels without PSI.
    pub(crate) fn pressure_some_us(&self) -> Option<u64> {
        match self {
            Cgroup::V2 { dir, .. } => {
                let text = std::fs::read_to_string(dir.join("cpu.pressure")).ok()?;
                super::proctext::parse_psi_some_total_us(&text)
            }
            Cgroup::V1 { .. } => None,
        }
    }

    /// The thread ids in it (v1: `tasks`; v2: `cgroup.threads`), at most `limit`.
    pub(crate) fn thread_ids(&self, limit: usize) -> Result<Vec<u32>, DaemonError> {
        let reading = || -> Result<Vec<u32>, String> {
            let file = match self {
                Cgroup::V2 { dir, .. } => dir.join("cgroup.threads"),
                Cgroup::V1 { cpu_dir, .. } => cpu_dir.join("tasks"),
            };
            Ok(parse_ids(&read(&file)?, limit))
        };
        reading().map_err(DaemonError::Measure)
    }

    /// The CPUs its quota allows: the smallest quota / period of it and its
    /// ancestors up to the hierarchy's root; None when none has a quota.
    pub(crate) fn quota_cpus(&self) -> Result<Option<f64>, DaemonError> {
        let reading = || -> Result<Option<f64>, String> {
            let (mut dir, root) = match self {
                Cgroup::V2 { dir, root } => (dir.as_path(), root.as_path()),
                Cgroup::V1 {
                    cpu_dir, cpu_root, ..
                } => (cpu_dir.as_path(), cpu_root.as_path()),
            };
            let mut smallest: Option<f64> = None;
            loop {
                if let Some(cpus) = self.own_quota_cpus(dir)? {
                    smallest = Some(smallest.map_or(cpus, |s| s.min(cpus)));
                }
                match dir.parent() {
                    Some(parent) if dir != root && parent.starts_with(root) => dir = parent,
                    _ => return Ok(smallest),
                }
            }
        };
        reading().map_err(DaemonError::Measure)
    }

    /// The quota of the cgroup at `dir` alone. A root cgroup has no quota file.
    fn own_quota_cpus(&self, dir: &Path) -> Result<Option<f64>, String> {
        match self {
            Cgroup::V2 { .. } => match std::fs::read_to_string(dir.join("cpu.max")) {
                Ok(text) => parse_v2_cpu_max(&text),
                Err(_) => Ok(None),
            },
            Cgroup::V1 { .. } => match std::fs::read_to_string(dir.join("cpu.cfs_quota_us")) {
                Ok(quota) => parse_v1_quota(&quota, &read(&dir.join("cpu.cfs_period_us"))?),
                Err(_) => Ok(None),
            },
        }
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The value of `key` in a flat keyed file (`key value` per line).
fn keyed(text: &str, file: &str, key: &str) -> Result<u64, String> {
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(' '))
        .ok_or_else(|| format!("{file}: no {key} line"))?;
    line.trim()
        .parse()
        .map_err(|_| format!("{file}: bad {key} value {:?}", line.trim()))
}

/// v2 `cpu.stat`: `usage_usec`, `nr_periods`, `nr_throttled`, `throttled_usec`.
/// The last three exist only with the cpu controller enabled.
fn parse_v2_cpu_stat(text: &str) -> Result<CpuStat, String> {
    let field = |key| keyed(text, "cpu.stat", key);
    Ok(CpuStat {
        usage_ns: field("usage_usec")?.saturating_mul(1000),
        throttled_ns: field("throttled_usec")?.saturating_mul(1000),
        nr_periods: field("nr_periods")?,
        nr_throttled: field("nr_throttled")?,
    })
}

/// v1: `cpuacct.usage` (ns) and the cpu controller's `cpu.stat`
/// (`nr_periods`, `nr_throttled`, `throttled_time` in ns).
fn parse_v1_cpu_stat(stat: &str, usage: &str) -> Result<CpuStat, String> {
    let field = |key| keyed(stat, "cpu.stat", key);
    let usage_ns = usage.trim().parse().map_err(|_| {
        format!(
            "cpuacct.usage: expected nanoseconds, found {:?}",
            usage.trim()
        )
    })?;
    Ok(CpuStat {
        usage_ns,
        throttled_ns: field("throttled_time")?,
        nr_periods: field("nr_periods")?,
        nr_throttled: field("nr_throttled")?,
    })
}

/// v2 `cpu.max`: `QUOTA PERIOD` in µs, or `max PERIOD` for no quota.
fn parse_v2_cpu_max(text: &str) -> Result<Option<f64>, String> {
    let bad = || {
        format!(
            "cpu.max: expected \"QUOTA PERIOD\" or \"max PERIOD\", found {:?}",
            text.trim()
        )
    };
    let mut words = text.split_whitespace();
    let (Some(quota), Some(period), None) = (words.next(), words.next(), words.next()) else {
        return Err(bad());
    };
    let period: u64 = period.parse().map_err(|_| bad())?;
    if quota == "max" {
        return Ok(None);
    }
    let quota: u64 = quota.parse().map_err(|_| bad())?;
    quota_share(quota, period).ok_or_else(bad).map(Some)
}

/// v1 `cpu.cfs_quota_us` (`-1` for none) and `cpu.cfs_period_us`, in µs.
fn parse_v1_quota(quota: &str, period: &str) -> Result<Option<f64>, String> {
    let quota: i64 = quota.trim().parse().map_err(|_| {
        format!(
            "cpu.cfs_quota_us: expected µs or -1, found {:?}",
            quota.trim()
        )
    })?;
    let bad_period = || {
        format!(
            "cpu.cfs_period_us: expected µs above 0, found {:?}",
            period.trim()
        )
    };
    let period: u64 = period.trim().parse().map_err(|_| bad_period())?;
    if quota < 0 {
        return Ok(None);
    }
    quota_share(quota as u64, period)
        .ok_or_else(bad_period)
        .map(Some)
}

/// Quota over period, in CPUs; None for a zero period.
fn quota_share(quota: u64, period: u64) -> Option<f64> {
    (period > 0).then(|| quota as f64 / period as f64)
}

/// Thread ids, one per line; anything else is skipped.
pub(crate) fn parse_ids(text: &str, limit: usize) -> Vec<u32> {
    text.lines()
        .filter_map(|l| l.trim().parse().ok())
        .take(limit)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2_STAT: &str = "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n\
        core_sched.force_idle_usec 0\nnr_periods 40\nnr_throttled 30\n\
        throttled_usec 2250000\nnr_bursts 0\nburst_usec 0\n";

    const V1_STAT: &str = "nr_periods 40\nnr_throttled 30\nthrottled_time 2250000000\n\
        nr_bursts 0\nburst_time 0\n";

    #[test]
    fn v2_cpu_stat_is_read_in_nanoseconds() {
        let stat = parse_v2_cpu_stat(V2_STAT).expect("real layout");
        let want = CpuStat {
            usage_ns: 1_500_000_000,
            throttled_ns: 2_250_000_000,
            nr_periods: 40,
            nr_throttled: 30,
        };
        assert_eq!(stat, want);
    }

    #[test]
    fn v1_cpu_stat_and_cpuacct_usage_are_read() {
        let stat = parse_v1_cpu_stat(V1_STAT, "1500000000\n").expect("real layout");
        assert_eq!(stat.usage_ns, 1_500_000_000);
        assert_eq!(stat.throttled_ns, 2_250_000_000);
        assert_eq!((stat.nr_periods, stat.nr_throttled), (40, 30));
    }

    #[test]
    fn bad_cgroup_stats_are_errors_naming_the_file_and_field() {
        // A v2 cgroup without the cpu controller has no throttling lines.
        let err = parse_v2_cpu_stat("usage_usec 5\nuser_usec 3\nsystem_usec 2\n").unwrap_err();
        assert_eq!(err, "cpu.stat: no throttled_usec line");
        let err =
            parse_v2_cpu_stat(&V2_STAT.replace("usage_usec 1500000", "usage_usec -1")).unwrap_err();
        assert_eq!(err, "cpu.stat: bad usage_usec value \"-1\"");
        let err = parse_v1_cpu_stat(V1_STAT, "lots").unwrap_err();
        assert_eq!(err, "cpuacct.usage: expected nanoseconds, found \"lots\"");
        assert!(parse_v1_cpu_stat("", "1").is_err());
        // A key must match whole: `nr_throttled_x` is not `nr_throttled`.
        assert!(keyed("nr_throttled_x 5\n", "f", "nr_throttled").is_err());
    }

    #[test]
    fn quotas_are_cpus_or_none() {
        assert_eq!(parse_v2_cpu_max("25000 100000\n"), Ok(Some(0.25)));
        assert_eq!(parse_v2_cpu_max("max 100000\n"), Ok(None));
        assert_eq!(parse_v2_cpu_max("200000 100000"), Ok(Some(2.0)));
        for bad in ["", "max", "1 0", "x 100000", "1 2 3", "-5 100000"] {
            let err = parse_v2_cpu_max(bad).expect_err(bad);
            assert!(err.starts_with("cpu.max: expected"), "{err}");
        }
        assert_eq!(parse_v1_quota("25000\n", "100000\n"), Ok(Some(0.25)));
        assert_eq!(parse_v1_quota("-1\n", "100000\n"), Ok(None));
        assert!(parse_v1_quota("25000", "0").is_err());
        assert!(parse_v1_quota("lots", "100000").is_err());
        assert!(parse_v1_quota("1", "-3").is_err());
    }

    #[test]
    fn thread_ids_skip_garbage_and_stop_at_the_limit() {
        assert_eq!(parse_ids("12\n13\nx\n\n14\n", 10), vec![12, 13, 14]);
        assert_eq!(parse_ids("1\n2\n3\n", 2), vec![1, 2]);
        assert!(parse_ids("", 5).is_empty());
    }

    #[test]
    fn mounts_are_found_co_mounted_or_split() {
        let split = Mounts::from_entries([
            (Path::new("/sys/fs/cgroup/cpu"), "cgroup", vec!["rw", "cpu"]),
            (
                Path::new("/sys/fs/cgroup/cpuacct"),
                "cgroup",
                vec!["rw", "cpuacct"],
            ),
            (Path::new("/sys/fs/cgroup/unified"), "cgroup2", vec!["rw"]),
            (Path::new("/proc"), "proc", vec!["rw"]),
        ]);
        assert_eq!(
            split.v1_cpu.as_deref(),
            Some(Path::new("/sys/fs/cgroup/cpu"))
        );
        assert_eq!(
            split.v1_cpuacct.as_deref(),
            Some(Path::new("/sys/fs/cgroup/cpuacct"))
        );
        assert_eq!(
            split.v2.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        let together = Mounts::from_entries([(
            Path::new("/sys/fs/cgroup/cpu,cpuacct"),
            "cgroup",
            vec!["cpu", "cpuacct"],
        )]);
        assert_eq!(together.v1_cpu, together.v1_cpuacct);
        assert_eq!(Mounts::from_entries([]), Mounts::default());
    }

    #[test]
    fn a_directory_that_is_not_a_cgroup_is_refused_with_what_was_expected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_str().expect("utf-8");
        let err = resolve(path, &Mounts::default()).unwrap_err();
        assert_eq!(err.exit_code(), 2, "a flag's mistake");
        let err = err.to_string();
        assert!(
            err.contains("has no cpu controller") && err.contains("must be a cpu cgroup"),
            "{err}"
        );
        let err = resolve("/no/such/cgroup", &Mounts::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--cgroup must be a cpu cgroup directory")
                && err.ends_with("found \"/no/such/cgroup\": no such cgroup"),
            "{err}"
        );
    }

    #[test]
    fn a_v2_directory_is_classified_and_its_quota_walks_up() {
        let root = tempfile::tempdir().expect("tempdir");
        let child = root.path().join("machine");
        std::fs::create_dir(&child).expect("mkdir");
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory\n").expect("write");
        std::fs::write(child.join("cgroup.controllers"), "cpu\n").expect("write");
        std::fs::write(child.join("cpu.max"), "50000 100000\n").expect("write");
        let mounts = Mounts {
            v2: Some(root.path().to_path_buf()),
            ..Mounts::default()
        };
        let cgroup = resolve("machine", &mounts).expect("a v2 cgroup");
        assert_eq!(
            cgroup,
            Cgroup::V2 {
                dir: child.clone(),
                root: root.path().to_path_buf()
            }
        );
        assert_eq!(cgroup.quota_cpus(), Ok(Some(0.5)));
        std::fs::write(root.path().join("cpu.max"), "25000 100000\n").expect("write");
        assert_eq!(
            cgroup.quota_cpus(),
            Ok(Some(0.25)),
            "an ancestor's smaller quota wins"
        );
        std::fs::write(child.join("cgroup.controllers"), "memory\n").expect("write");
        let err = resolve("machine", &mounts).unwrap_err().to_string();
        assert!(err.contains("no cpu controller"), "{err}");
    }
}
