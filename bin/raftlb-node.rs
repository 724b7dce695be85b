//! raftlb-node: one balancer node (Raft over UDP and HTTP on the same port).
//!
//! Parses the flags, nodes.txt and the cluster key (exit 2 on a mistake, naming
//! it; a missing key says how to make one), starts the runtime and the HTTP
//! server, and runs until SIGTERM or SIGINT: then a leader
//! hands leadership over, the threads stop, and the process exits 0. Every
//! acknowledged write is already fsynced, so SIGKILL loses nothing either.

// The flags' doc comments are clap's help texts, read in a terminal, where
// `data/<ID>` is plain text rather than an HTML tag.
#![allow(rustdoc::invalid_html_tags)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use raftlb::auth::{Auth, KeyFlags};
use raftlb::http::Limits;
use raftlb::nodes::Nodes;
use raftlb::runtime::{self, NodeSettings};
use raftlb::server::NodeHttp;

/// One raftlb balancer node: Raft over UDP and HTTP on its nodes.txt port.
#[derive(Parser, Debug)]
#[command(name = "raftlb-node", version, about)]
struct Args {
    /// This node's id in nodes.txt.
    #[arg(long)]
    id: String,
    /// The cluster membership file.
    #[arg(long, default_value = "nodes.txt")]
    nodes: PathBuf,
    /// Where term, vote, log and snapshots live [default: data/<ID>].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The cluster key: every datagram and report is signed and checked with it
    /// (make one with `raftlb keygen FILE`) [default: cluster.key beside the
    /// nodes file]
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// During a key rotation, a second key: accepted, never used to sign.
    #[arg(long, value_name = "FILE")]
    previous_key: Option<PathBuf>,
    /// Run without a key: nothing is signed or checked, and anyone who can reach
    /// this node can send it reports and Raft messages. For experiments only.
    #[arg(long, conflicts_with_all = ["key", "previous_key"])]
    insecure: bool,
    /// A server whose reports stop for this long is marked dead.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    dead_after_ms: u64,
    /// A server dead this long (no report applied for it) is removed from the
    /// table by a committed entry; it comes back as new when it reports again.
    /// A number with a unit (500ms, 30s, 90m, 24h, 7d) or plain milliseconds;
    /// 100ms to 365d.
    #[arg(long, default_value = "24h", value_parser = runtime::parse_forget_after)]
    forget_after: Duration,
    /// Largest N served.
    #[arg(long, default_value_t = raftlb::primes::MAX_N, value_parser = clap::value_parser!(u64).range(1..=raftlb::primes::MAX_SUPPORTED_N))]
    max_n: u64,
    /// Leader heartbeat interval.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(10..=10_000))]
    heartbeat_ms: u64,
    /// Election timeouts are drawn between these two.
    #[arg(long, default_value_t = 150, value_parser = clap::value_parser!(u64).range(20..=60_000))]
    election_ms_min: u64,
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(30..=120_000))]
    election_ms_max: u64,
    /// Take a snapshot and compact the log after this many applied entries
    /// (also after 2 MiB of applied entry data, whichever comes first).
    #[arg(long, default_value_t = raftlb::raft::DEFAULT_SNAPSHOT_ENTRIES, value_parser = clap::value_parser!(u64).range(10..=1_000_000))]
    snapshot_entries: u64,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let args = Args::parse();
    // Before any thread starts; returns only if the exec was not needed or failed.
    if let Err(e) = runtime::exec_without_tcache() {
        log::warn!(
            "running with glibc's thread caches, a few MiB more memory: cannot re-execute: {e}"
        );
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("raftlb-node: {message}");
            ExitCode::from(code)
        }
    }
}

/// How long a stopping node waits for the HTTP requests in flight: a note
/// request is answered within 3 s (its deadline), a prime within its budget.
const HTTP_DRAIN_MAX: Duration = Duration::from_secs(5);

/// Exit code and message of a failure: 2 for the user's configuration, 1 for
/// what went wrong at run time.
type Exit = (u8, String);

fn run(args: Args) -> Result<(), Exit> {
    let file = args.nodes.display().to_string();
    let nodes = Nodes::load(&args.nodes).map_err(|e| (2, e.to_string()))?;
    nodes
        .require(&args.id, &file)
        .map_err(|e| (2, e.to_string()))?;
    if args.election_ms_min >= args.election_ms_max || args.heartbeat_ms >= args.election_ms_min {
        return Err((
            2,
            "timing flags must satisfy heartbeat-ms < election-ms-min < election-ms-max".into(),
        ));
    }
    let auth = KeyFlags {
        key: args.key,
        previous_key: args.previous_key,
        insecure: args.insecure,
    }
    .load(&args.nodes)
    .map_err(|e| (2, e.to_string()))?;
    if let Auth::Insecure = auth {
        log::warn!("running --insecure: datagrams and reports are neither signed nor checked, anyone who can reach this node can forge them");
    }
    let settings = NodeSettings {
        auth,
        data_dir: args
            .data_dir
            .unwrap_or_else(|| PathBuf::from("data").join(&args.id)),
        id: args.id,
        nodes,
        dead_after: Duration::from_millis(args.dead_after_ms),
        forget_after: args.forget_after,
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        election_min: Duration::from_millis(args.election_ms_min),
        election_max: Duration::from_millis(args.election_ms_max),
        max_n: args.max_n,
        snapshot_entries: args.snapshot_entries,
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // A second signal while stopping exits at once.
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())
            .and_then(|_| signal_hook::flag::register(signal, stop.clone()))
            .map_err(|e| (1, format!("cannot install signal handlers: {e}")))?;
    }
    let node = runtime::start(&settings).map_err(|e| (e.exit_code(), e.to_string()))?;
    let address = node.address;
    // nodes.txt gives this node its address: one this host cannot listen on is
    // a configuration to fix, like a bad line (exit 2).
    let listener = raftlb::http::bind(&address.to_string()).map_err(|e| (2, e.to_string()))?;
    let handler = NodeHttp::new(node.handle());
    let serving = raftlb::http::serve(listener, Limits::default(), handler);
    log::info!("node {} serving http and raft on {address}", settings.id);
    while !stop.load(Ordering::Relaxed) && !node.is_finished() {
        std::thread::sleep(Duration::from_millis(20));
    }
    if stop.load(Ordering::Relaxed) {
        log::info!("stopping on signal");
    }
    // HTTP first, while the event loop still runs: new connections are refused
    // (a client moves on to another node) and the requests in flight, note
    // writes among them, get their real answers. Stopping the loop first
    // answered them 503 "this node is stopping" (seen in a rolling restart).
    if !serving.stop_within(HTTP_DRAIN_MAX) {
        log::warn!("stopping: requests still in flight after {HTTP_DRAIN_MAX:?}");
    }
    let result = node.shutdown();
    match result {
        Ok(()) => {
            log::info!("stopped");
            Ok(())
        }
        Err(e) => Err((1, e.to_string())),
    }
}
