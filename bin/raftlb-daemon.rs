//! `raftlb-daemon`: samples a server's CPU load and reports it to every node.
//!
//! Flag parsing, logging and signals only; the work is in `raftlb::daemon`.
//! Exit codes: 0 after SIGINT/SIGTERM, 1 when it cannot start, 2 on bad usage
//! or configuration (including a bad nodes.txt, named with its line).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use crossbeam_channel::Receiver;
use raftlb::auth::{Auth, KeyFlags};
use raftlb::daemon::{
    self, cgroup, sample::Target, Config, DaemonError, INTERVAL_MS_MAX, INTERVAL_MS_MIN,
};
use raftlb::nodes::Nodes;

/// Samples CPU load and reports it to every node of the cluster, signed with
/// the cluster key, as {"server","url","cpu","wait","seq"}: cpu = CPU used, in
/// percent of what the server may use; wait = the share of its runnable time
/// spent not running (queued for a CPU or throttled), 0..100. Without --pid or
/// --cgroup: the whole machine (/proc/stat, /proc/pressure/cpu).
#[derive(Parser, Debug)]
#[command(name = "raftlb-daemon", version)]
struct Args {
    /// The worker this daemon speaks for, http://HOST:PORT; no reports while
    /// its GET of --health-path does not answer 200.
    #[arg(long)]
    worker: String,
    /// The worker's health check: GET of this path must answer 200 for the
    /// daemon to report (a path starting with /).
    #[arg(long, default_value = "/health", value_name = "PATH")]
    health_path: String,
    /// The server's id in reports [default: the --worker URL as given]
    #[arg(long)]
    id: Option<String>,
    /// The cluster's membership file.
    #[arg(long, default_value = "nodes.txt")]
    nodes: PathBuf,
    /// Milliseconds between reports.
    #[arg(long, default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(INTERVAL_MS_MIN..=INTERVAL_MS_MAX))]
    interval_ms: u64,
    /// Measure this process instead of the whole machine: cpu = its CPU time
    /// as a share of all CPUs; wait = its threads' run-queue delay as a share
    /// of their run time plus that delay (/proc/PID/task/*/schedstat).
    #[arg(long, value_name = "PID")]
    pid: Option<u32>,
    /// Measure this cpu cgroup (v2, or v1 cpu + cpuacct) instead of the whole
    /// machine: cpu = its usage as a share of its quota (cpu.max or
    /// cpu.cfs_quota_us, so a cgroup at its quota reads 100), or of all CPUs
    /// without one; wait = time throttled or queued as a share of that plus
    /// its usage. PATH: absolute under /sys/fs/cgroup, or relative to the
    /// cgroup root.
    #[arg(long, value_name = "PATH", conflicts_with = "pid")]
    cgroup: Option<String>,
    /// The cluster key every report is signed with (X-Raftlb-Auth); make one
    /// with `raftlb keygen FILE` [default: cluster.key beside the nodes file]
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Send unsigned reports (only nodes started with --insecure accept them).
    #[arg(long, conflicts_with = "key")]
    insecure: bool,
}

/// Why the daemon stopped early; each maps to an exit code.
enum Exit {
    Usage(String),
    Runtime(String),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(Exit::Usage(message)) => {
            eprintln!("raftlb-daemon: {message}");
            ExitCode::from(2)
        }
        Err(Exit::Runtime(message)) => {
            eprintln!("raftlb-daemon: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Exit> {
    // clap exits 2 on bad usage and 0 for --help, as SPEC wants.
    let args = Args::parse();
    let config = config(args)?;
    let stop = stop_on_signals().map_err(Exit::Runtime)?;
    daemon::run(&config, &stop).map_err(Exit::from)
}

impl From<DaemonError> for Exit {
    fn from(e: DaemonError) -> Exit {
        match e.exit_code() {
            2 => Exit::Usage(e.to_string()),
            _ => Exit::Runtime(e.to_string()),
        }
    }
}

fn config(args: Args) -> Result<Config, Exit> {
    daemon::check_worker_url(&args.worker)?;
    let id = args.id.unwrap_or_else(|| args.worker.clone());
    daemon::check_id(&id)?;
    let nodes = Nodes::load(&args.nodes).map_err(|e| Exit::Usage(e.to_string()))?;
    let auth = KeyFlags {
        key: args.key,
        previous_key: None,
        insecure: args.insecure,
    }
    .load(&args.nodes)
    .map_err(|e| Exit::Usage(e.to_string()))?;
    if let Auth::Insecure = auth {
        log::warn!(
            "running --insecure: reports are not signed, and only --insecure nodes accept them"
        );
    }
    daemon::check_health_path(&args.health_path)?;
    let target = match (args.pid, args.cgroup) {
        (None, None) => Target::Machine,
        (Some(pid), _) if std::path::Path::new(&format!("/proc/{pid}")).exists() => {
            Target::Process(pid)
        }
        (Some(pid), _) => return Err(Exit::Usage(format!("--pid {pid}: no such process"))),
        (None, Some(path)) => Target::Cgroup(cgroup::resolve(&path, &cgroup::Mounts::current()?)?),
    };
    Ok(Config {
        worker: args.worker,
        id,
        nodes,
        interval: Duration::from_millis(args.interval_ms),
        target,
        health_path: args.health_path,
        auth,
    })
}

/// A channel that receives once SIGINT or SIGTERM arrives, so the main loop
/// can wait for its next tick and for a signal in one call.
fn stop_on_signals() -> Result<Receiver<()>, String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot handle signals: {e}"))?;
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("signals".to_string())
        .spawn(move || {
            if signals.forever().next().is_some() {
                // Full means a stop is already pending: nothing to add.
                let _ = tx.try_send(());
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(rx)
}
