//! The daemon: samples a server's CPU load and reports it to every node.
//!
//! Each interval it takes a sample (`sample.rs` reads the counters: /proc
//! through the procfs crate, `proctext.rs`, and cgroup files, `cgroup.rs`;
//! `load.rs` turns them into `cpu` and `wait`), asks the worker's `GET` of
//! `--health-path`, and, only when the worker answers 200 and the measured
//! process or cgroup exists, queues one report for every node
//! (`sender.rs`, one thread per node; the nodes are nodes.txt's plus the
//! members a node's `/status` adds, `members.rs`). Sending nothing while the
//! worker is down is how the cluster learns it is dead: its reports stop, and after
//! `--dead-after-ms` the leader marks it dead. `seq` starts at the start time in
//! ms since the epoch, so it keeps growing across restarts.

pub mod cgroup;
pub mod load;
mod members;
pub mod proctext;
pub mod sample;
pub mod sender;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use log::{debug, info};

use crate::client::http::{self, Timeouts};
use crate::nodes::Nodes;
use crate::report::Report;
use load::Load;
use sample::{Sampler, Target};

/// Bounds of `--interval-ms`: below 50 ms the reports would be a load of their
/// own on the Raft log; above a minute a server would be marked dead between two.
pub const INTERVAL_MS_MIN: u64 = 50;
pub const INTERVAL_MS_MAX: u64 = 60_000;

/// Each report's call to a node: a node that does not connect in 200 ms is down.
pub(crate) const REPORT_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_millis(200),
    total: Duration::from_millis(500),
};

/// The health check: connecting is quick or the worker is down, but a worker
/// busy with large primes may take a while to answer, and that is not death.
pub(crate) const HEALTH_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_millis(200),
    total: Duration::from_millis(1000),
};

/// The validated command line.
#[derive(Clone, Debug)]
pub struct Config {
    /// `http://HOST:PORT`, exactly as given: it is the report's `url`.
    pub worker: String,
    /// The server's id in reports.
    pub id: String,
    pub nodes: Nodes,
    pub interval: Duration,
    pub target: Target,
    /// The worker's health check path (`--health-path`), starting with `/`.
    pub health_path: String,
    /// Signs every report (`X-Raftlb-Auth`), or `--insecure`.
    pub auth: crate::auth::Auth,
}

/// Why the daemon cannot start; [`DaemonError::exit_code`] says whose
/// problem it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DaemonError {
    /// A flag's value breaks the flag's rule (exit 2).
    Flag {
        flag: &'static str,
        rule: &'static str,
        value: String,
        reason: String,
    },
    /// What it measures cannot be read: /proc or the cgroup (exit 1).
    Measure(String),
    /// The senders to the nodes cannot be started (exit 1).
    Report(String),
}

impl DaemonError {
    fn flag(flag: &'static str, rule: &'static str, value: &str, reason: &str) -> DaemonError {
        DaemonError::Flag {
            flag,
            rule,
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }

    /// 2 for a flag, 1 for what went wrong while starting.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Flag { .. } => 2,
            DaemonError::Measure(_) | DaemonError::Report(_) => 1,
        }
    }
}

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DaemonError::Flag {
                flag,
                rule,
                value,
                reason,
            } => write!(f, "{flag} {rule}, found {value:?}: {reason}"),
            DaemonError::Measure(reason) | DaemonError::Report(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for DaemonError {}

/// Checks `--worker`: the rules the nodes apply to a report's url
/// (`report::check_worker_url`), and no trailing `/` either, because the
/// daemon builds `WORKER/health` from it.
pub fn check_worker_url(url: &str) -> Result<(), DaemonError> {
    let bad = |why: &str| DaemonError::flag("--worker", "must be http://HOST:PORT", url, why);
    if url.ends_with('/') {
        return Err(bad("nothing may follow the port"));
    }
    crate::report::check_worker_url(url).map_err(bad)
}

/// Longest `--health-path`: it goes into one request line.
pub(crate) const HEALTH_PATH_MAX: usize = 1024;

/// Checks `--health-path`: an absolute path (and query) that can go into a
/// request line as given: starting with `/`, no spaces or control characters.
pub fn check_health_path(path: &str) -> Result<(), DaemonError> {
    let rule = "must be a path starting with /";
    let bad = |why: &str| DaemonError::flag("--health-path", rule, path, why);
    if !path.starts_with('/') {
        return Err(bad("it does not start with /"));
    }
    if path.len() > HEALTH_PATH_MAX {
        return Err(bad(&format!("longer than {HEALTH_PATH_MAX} bytes")));
    }
    if path
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '#')
    {
        return Err(bad(
            "spaces, control characters and # cannot go into a request line",
        ));
    }
    Ok(())
}

/// Checks `--id` against the rules the nodes apply to a report's `server`.
pub fn check_id(id: &str) -> Result<(), DaemonError> {
    probe_report("http://h:1", id).validate().map_err(|e| {
        let reason = e.to_string();
        let reason = reason.trim_start_matches("bad report: ");
        DaemonError::flag("--id", "must be a server id the nodes accept", id, reason)
    })
}

fn probe_report(url: &str, id: &str) -> Report {
    Report {
        server: id.to_string(),
        url: url.to_string(),
        cpu: 0.0,
        wait: 0.0,
        seq: 0,
    }
}

/// Why no report is sent this interval; None when one is.
type Pause = Option<String>;

/// Runs until `stop` receives or closes. Errors only at start.
pub fn run(config: &Config, stop: &Receiver<()>) -> Result<(), DaemonError> {
    let mut sampler = Sampler::new(config.target.clone())?;
    let agent = http::agent(REPORT_TIMEOUTS, true);
    let mut senders = sender::Senders::start(config.nodes.entries(), &agent)?;
    let refresher =
        members::Refresher::start(config.nodes.entries().to_vec(), members::REFRESH_INTERVAL)?;
    let health_agent = http::agent(HEALTH_TIMEOUTS, true);
    let health_url = format!("{}{}", config.worker, config.health_path);
    let mut seq = start_seq();
    // Some(reason) while paused; starts as "not yet" so the first state is logged.
    let mut paused: Option<Pause> = None;
    info!(
        "reporting {} ({}) to {} nodes every {} ms",
        config.id,
        config.worker,
        config.nodes.entries().len(),
        config.interval.as_millis()
    );
    let mut next = Instant::now() + config.interval;
    // A signal (or its sender closing) ends the loop; a timeout is the next tick.
    while let Err(RecvTimeoutError::Timeout) = stop.recv_deadline(next) {
        // After a stall (a slow health check), skip the missed ticks: no bursts.
        next = (next + config.interval).max(Instant::now());
        if let Some(targets) = refresher.latest() {
            let ids: Vec<&str> = targets.iter().map(|t| t.id.as_str()).collect();
            info!("the configuration changed: reporting to {}", ids.join(", "));
            senders.retarget(&targets, &agent);
        }
        let pause = match (sampler.sample(), worker_health(&health_agent, &health_url)) {
            (Err(reason), _) => Some(reason.to_string()),
            (Ok(_), Err(reason)) => Some(reason),
            // The first sample is only a baseline for the next one's deltas: not a
            // pause worth a log line.
            (Ok(None), Ok(())) => continue,
            (Ok(Some(load)), Ok(())) => {
                senders.send(&report_body(config, load, seq));
                seq += 1;
                None
            }
        };
        log_change(paused.as_ref(), &pause);
        paused = Some(pause);
    }
    info!("stopping");
    refresher.stop();
    senders.stop();
    Ok(())
}

/// Ms since the epoch now: the first `seq`, above every `seq` an earlier run of
/// this daemon sent as long as it sent at most one report per ms.
fn start_seq() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `Ok` when the worker answers 200 to `GET` of the health path.
fn worker_health(agent: &ureq::Agent, url: &str) -> Result<(), String> {
    match http::get(agent, url) {
        Ok(reply) if reply.status == 200 => Ok(()),
        Ok(reply) => Err(format!("worker answered {} to {url}", reply.status)),
        Err(reason) => Err(format!("worker does not answer: {reason}")),
    }
}

fn report_body(config: &Config, load: Load, seq: u64) -> sender::Body {
    let report = Report {
        server: config.id.clone(),
        url: config.worker.clone(),
        cpu: round_hundredths(load.cpu),
        wait: round_hundredths(load.wait),
        seq,
    };
    debug!("report {report:?}");
    let json = serde_json::to_vec(&report).expect("a report of plain fields serializes");
    let tag = config.auth.sign_body(&json);
    Arc::new(sender::SignedReport { json, tag })
}

/// Two decimals are all a load needs, and keep the Raft log entries short.
fn round_hundredths(percent: f64) -> f64 {
    ((percent * 100.0).round() / 100.0).clamp(0.0, 100.0)
}

/// Logs at info when reporting pauses or resumes, not on every interval.
fn log_change(before: Option<&Pause>, now: &Pause) {
    match (before, now) {
        (Some(None), None) | (Some(Some(_)), Some(_)) => {}
        (None, None) => debug!("reporting"),
        (Some(Some(_)), None) => info!("worker up: reporting again"),
        (_, Some(reason)) => info!("worker down, not reporting: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_urls_must_be_http_host_port() {
        for good in [
            "http://127.0.0.1:13337",
            "http://localhost:1",
            "http://[::1]:80",
        ] {
            assert_eq!(check_worker_url(good), Ok(()), "{good}");
        }
        let bad = [
            "",
            "127.0.0.1:13337",
            "https://h:1",
            "http://h",
            "http://:1",
            "http://h:0",
            "http://h:99999",
            "http://h:1/",
            "http://h:1/x",
            "http://h h:1",
        ];
        for url in bad {
            let err = check_worker_url(url).expect_err(url);
            assert_eq!(err.exit_code(), 2);
            let err = err.to_string();
            assert!(
                err.starts_with("--worker must be http://HOST:PORT"),
                "{err}"
            );
        }
    }

    #[test]
    fn health_paths_must_be_absolute_and_fit_a_request_line() {
        for good in ["/health", "/", "/ready?full=1", "/a/b-c_d.e"] {
            assert_eq!(check_health_path(good), Ok(()), "{good}");
        }
        let long = format!("/{}", "x".repeat(HEALTH_PATH_MAX));
        for bad in [
            "",
            "health",
            "http://h:1/health",
            "/a b",
            "/a\nb",
            "/a#b",
            long.as_str(),
        ] {
            let err = check_health_path(bad).expect_err(bad).to_string();
            assert!(
                err.starts_with("--health-path must be a path starting with /"),
                "{err}"
            );
        }
    }

    #[test]
    fn ids_follow_the_report_rules() {
        assert_eq!(check_id("http://127.0.0.1:13337"), Ok(()));
        assert!(check_id("").is_err());
        assert!(check_id("a\nb").is_err());
        assert!(check_id(&"x".repeat(129)).is_err());
    }

    #[test]
    fn loads_are_rounded_and_kept_in_range() {
        assert_eq!(round_hundredths(12.3456), 12.35);
        assert_eq!(round_hundredths(100.0), 100.0);
        assert_eq!(round_hundredths(0.0), 0.0);
    }
}
