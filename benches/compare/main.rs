//! `make bench`: raftlb beside the reference tools, every row measured in one
//! run on one machine, written to BENCHMARKS.md and printed.
//!
//! - failover (`failover.rs`): time to a new leader after a SIGKILL of the
//!   leader, and the client-visible gap, beside a 5-member etcd (`etcd.rs`);
//! - replication (`replication.rs`): note writes beside etcd puts, fsync on;
//! - key (`key.rs`): failover and writes/s with the cluster key on, beside a
//!   second cluster started with `--insecure`;
//! - balancing (`balancing.rs`): primes through a node beside HAProxy and nginx
//!   (`proxies.rs`) in front of the same workers;
//! - machines (`machines.rs`): servers as machines (a cpu cgroup each, made
//!   with the system tests' `tests/daemon/cgroup.rs`), mixed N, raftlb beside
//!   HAProxy's and nginx's policies: even, a weak machine, a noisy neighbour;
//!   a cluster of its own, started after the others stop;
//! - slowloris (`balancing.rs`, the attacker in `slowloris.rs`): primes through
//!   a node and through HAProxy while 1,000 slow connections from another
//!   address are held against it, beside the same without them;
//! - membership (`membership.rs`, `replace.rs`, `rolling.rs`): replacing a
//!   dead member whose disk is gone (`raftlb member replace` beside etcdctl's
//!   remove, add --learner, promote) and a rolling restart, leader last, each
//!   with the client gap and failed requests; a raftlb cluster and a 5-member
//!   etcd of their own, started after the others stop;
//! - worker (`worker.rs`): p_N beside primesieve and primecount;
//! - footprint (`footprint.rs`): a node's RSS and data dir.
//!
//! Loads are run by `raftlb bench` (`loadgen.rs`), the same tool on both sides
//! of every ratio. raftlb's processes come from the system tests' harness
//! (`tests/support`); the references' from `procs.rs`. Every process is
//! stopped by pid when its owner drops, on panic too; every wait is bounded.
//!
//! `BENCH_QUICK=1` makes a short development run (5 trials, 2 s loads, no
//! primesieve at 10^10, 50,000 entries); `BENCH_SECS` sets the load length;
//! `BENCH_ONLY=failover,worker` runs only those sections (while working on one);
//! `BENCH_MACHINES=weak,shift` only those scenarios of the machines section.

#[path = "../../tests/support/mod.rs"]
mod support;

mod balancing;
#[path = "../../tests/daemon/cgroup.rs"]
mod cgroup;
mod etcd;
mod failover;
mod footprint;
mod http;
mod key;
mod loadgen;
mod machine;
mod machines;
mod membership;
mod procs;
mod proxies;
mod replace;
mod replication;
mod rolling;
mod slowloris;
mod table;
mod worker;

use std::time::{Duration, Instant};

use support::{Cluster, Options};
use table::{Report, Row};

/// How long and how often to measure.
pub struct Settings {
    pub quick: bool,
    /// Length of each timed load, after its warm-up.
    pub load_secs: u64,
    /// Failover trials per system.
    pub trials: usize,
    /// Entries committed before the footprint is measured again.
    pub footprint_entries: u64,
    /// The sections to run; all when None.
    only: Option<Vec<String>>,
}

impl Settings {
    fn from_env() -> Settings {
        let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let load_secs = std::env::var("BENCH_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|s| (1..=600).contains(s))
            .unwrap_or(if quick { 2 } else { 10 });
        Settings {
            quick,
            load_secs,
            trials: if quick { 5 } else { 20 },
            footprint_entries: if quick { 50_000 } else { 1_000_000 },
            only: std::env::var("BENCH_ONLY")
                .ok()
                .map(|v| v.split(',').map(|s| s.trim().to_string()).collect()),
        }
    }

    /// Whether `section` is to be run.
    pub fn runs(&self, section: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|s| s == section))
    }
}

fn main() {
    let settings = Settings::from_env();
    let started = Instant::now();
    let machine = machine::describe();
    let mut report = Report::default();
    if settings.runs("worker") {
        worker::run(&settings, &mut report);
    }
    if [
        "failover",
        "replication",
        "key",
        "balancing",
        "slowloris",
        "footprint",
    ]
    .iter()
    .any(|s| settings.runs(s))
    {
        systems(&settings, &mut report);
    }
    if settings.runs(membership::SECTION) {
        membership::run(&settings, &mut report);
    }
    if settings.runs("machines") {
        machines::run(&settings, &mut report);
    }
    let document = table::document(&report, &machine, &settings, started.elapsed());
    let path = std::path::Path::new(machine::ROOT).join("BENCHMARKS.md");
    if let Err(e) = std::fs::write(&path, &document) {
        eprintln!("bench: cannot write {}: {e}", path.display());
    }
    println!("{document}");
}

/// The benchmarks' cluster: SPEC's defaults, as a user runs it; with the
/// cluster key unless `insecure`.
pub fn cluster_options(insecure: bool) -> Options {
    Options {
        dead_after_ms: 3000,
        report_interval_ms: 1000,
        daemons_watch_worker_pid: true,
        insecure,
        ..Options::default()
    }
}

/// Everything that runs processes: one raftlb cluster for all of it, etcd for
/// replication and failover (stopped before the footprint's long write run), a
/// second, insecure cluster for the key's rows only.
fn systems(settings: &Settings, report: &mut Report) {
    let mut cluster = Cluster::start(cluster_options(false));
    cluster.wait_for_leader(Duration::from_secs(30));
    cluster.wait_for_servers(&[true, true, true], Duration::from_secs(30));
    // Idle: the start-up's allocations done, a few reports applied.
    std::thread::sleep(Duration::from_secs(3));
    if settings.runs("footprint") {
        footprint::idle(&cluster, report);
    }
    if settings.runs("balancing") || settings.runs("slowloris") {
        balancing::run(&cluster, settings, report);
    }
    if settings.runs("replication") || settings.runs("failover") {
        with_etcd(&mut cluster, settings, report);
    }
    if settings.runs("key") {
        key::run(&mut cluster, settings, report);
    }
    if settings.runs("footprint") {
        footprint::after_entries(&cluster, settings, report);
    }
}

/// Replication and failover, beside a 5-member etcd stopped on return.
fn with_etcd(cluster: &mut Cluster, settings: &Settings, report: &mut Report) {
    let mut etcd = match etcd::Etcd::start(5) {
        Ok(etcd) => etcd,
        Err(e) => return report.row(Row::error("replication", "etcd start", &e)),
    };
    let member = format!("etcd {}   # member 0 of 5", etcd.args(0).join(" "));
    report.command("replication", member);
    if settings.runs("replication") {
        replication::run(cluster, &etcd, settings, report);
    }
    if settings.runs("failover") {
        failover::run(cluster, &mut etcd, settings, report);
    }
}
