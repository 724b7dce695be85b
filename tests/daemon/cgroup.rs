//! A cpu cgroup made by a test (as root) to stand for one server's machine:
//! v2 when the unified hierarchy has the cpu controller, else v1 `cpu` (and
//! its `cpuacct` twin when mounted apart). `Drop` moves every process left in
//! it back to the root and removes it, whatever the test did.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use raftlb::daemon::cgroup::Mounts;

pub struct TestCgroup {
    /// The cgroup's directories (one per hierarchy), each with its root.
    dirs: Vec<(PathBuf, PathBuf)>,
}

impl TestCgroup {
    /// Creates `name` with a quota of `quota_us` per 100 ms period (None: no
    /// quota). Err says why the host does not allow it.
    pub fn create(name: &str, quota_us: Option<u64>) -> Result<TestCgroup, String> {
        // SAFETY: geteuid(2) takes no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root: cannot create cgroups".to_string());
        }
        let mounts = Mounts::current().map_err(|e| e.to_string())?;
        let v2_root = mounts.v2.clone().filter(|root| {
            std::fs::read_to_string(root.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|w| w == "cpu"))
        });
        let (roots, quota_file, quota) = if let Some(root) = v2_root {
            write(&root.join("cgroup.subtree_control"), "+cpu")?;
            let quota = quota_us.map(|q| format!("{q} 100000"));
            (vec![root], "cpu.max", quota)
        } else if let Some(cpu) = mounts.v1_cpu.clone() {
            let mut roots = vec![cpu.clone()];
            match &mounts.v1_cpuacct {
                Some(acct) if *acct != cpu => roots.push(acct.clone()),
                Some(_) => {}
                None => return Err("cgroup v1 without a cpuacct hierarchy".to_string()),
            }
            (roots, "cpu.cfs_quota_us", quota_us.map(|q| q.to_string()))
        } else {
            return Err("no cgroup hierarchy with the cpu controller".to_string());
        };
        let mut cgroup = TestCgroup { dirs: Vec::new() };
        for root in roots {
            let dir = root.join(name);
            std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
            cgroup.dirs.push((dir, root));
        }
        if let Some(quota) = quota {
            if quota_file == "cpu.cfs_quota_us" {
                write(&cgroup.path().join("cpu.cfs_period_us"), "100000")?;
            }
            write(&cgroup.path().join(quota_file), &quota)?;
        }
        Ok(cgroup)
    }

    /// The directory to give `--cgroup`.
    pub fn path(&self) -> &Path {
        &self.dirs[0].0
    }

    /// CPU time used by the cgroup's processes so far, in µs: v2's
    /// `cpu.stat` `usage_usec`, else v1's `cpuacct.usage` (ns); None when
    /// unreadable.
    pub fn usage_us(&self) -> Option<u64> {
        for (dir, _) in &self.dirs {
            if let Ok(stat) = std::fs::read_to_string(dir.join("cpu.stat")) {
                let usage = stat.lines().find_map(|l| l.strip_prefix("usage_usec "));
                if let Some(us) = usage.and_then(|v| v.trim().parse().ok()) {
                    return Some(us);
                }
            }
            if let Ok(ns) = std::fs::read_to_string(dir.join("cpuacct.usage")) {
                return ns.trim().parse::<u64>().ok().map(|ns| ns / 1000);
            }
        }
        None
    }

    /// Moves process `pid` into the cgroup (in every hierarchy).
    pub fn add(&self, pid: u32) -> Result<(), String> {
        for (dir, _) in &self.dirs {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for (dir, root) in &self.dirs {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.split_whitespace() {
                    let _ = std::fs::write(root.join("cgroup.procs"), pid);
                }
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if Instant::now() > deadline => {
                        eprintln!("could not remove cgroup {}: {e}", dir.display());
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("write {text:?} to {}: {e}", path.display()))
}
