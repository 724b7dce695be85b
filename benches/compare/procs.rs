//! The reference programs' processes (etcd, HAProxy, nginx, the noisy
//! neighbours' busy loops) and what the bench reads about processes: RSS and
//! disk use.
//!
//! raftlb's own processes go through `tests/support` (`Proc`); a `Guard` is the
//! same idea for programs that may have children of their own: on drop it asks
//! the process to stop (SIGTERM, so that nginx's master takes its workers down
//! with it), waits a little, then SIGKILLs it. Every child is started in our
//! process group, so a Ctrl-C of `make bench` reaches them all too.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support;

/// How long a guarded process gets to stop on SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// A started reference process, stopped on drop (even on panic).
pub struct Guard {
    pub name: String,
    child: Child,
}

impl Guard {
    /// Starts `program args`, its output into `log`.
    pub fn spawn(name: &str, program: &str, args: &[String], log: &Path) -> Result<Guard, String> {
        let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("start {name} ({program}): {e}"))?;
        Ok(Guard {
            name: name.to_string(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL now, and reap: the failover trials' crash.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Fails when the process already exited (a bad config, a port taken).
    pub fn check_running(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("{} exited: {status}", self.name)),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            support::send_signal(self.pid(), "TERM");
            let start = Instant::now();
            while start.elapsed() < STOP_GRACE {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// VmRSS of `pid` in KiB (0 when the process is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Disk use of a directory tree in KiB, like `du -sk`: allocated blocks, not
/// apparent sizes. Bounded in depth; unreadable entries count as empty.
pub fn disk_use_kib(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fn walk(path: &Path, depth: usize) -> u64 {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return 0;
        };
        let own = meta.blocks() * 512;
        if !meta.is_dir() || depth == 0 {
            return own;
        }
        let children = std::fs::read_dir(path)
            .map(|entries| entries.flatten().map(|e| walk(&e.path(), depth - 1)).sum())
            .unwrap_or(0);
        own + children
    }
    walk(dir, 8) / 1024
}

/// The number of CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The first line of `program flag`'s output (stdout, else stderr), for the
/// versions paragraph; "not found" when it does not run.
pub fn version_line(program: &str, flag: &str) -> String {
    match Command::new(program).arg(flag).output() {
        Ok(out) => {
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        }
        Err(_) => "not found".to_string(),
    }
}
