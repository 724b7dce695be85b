//! `raftlb`: the command-line client of a raftlb cluster.
//!
//! Flag parsing, printing and exit codes only; the work is in `raftlb::client`.
//! Exit codes: 0 success; 1 the operation failed (every node failed, no node
//! answered `status`, no `bench` request succeeded); 2 bad usage or
//! configuration, including an N that a node refused with 400.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use raftlb::client::failover::Failure;
use raftlb::client::http::Timeouts;
use raftlb::client::{admin, bench, note, prime, view};
use raftlb::nodes::Nodes;

/// A prime answer can take seconds for a large N, and a timeout makes the next
/// node compute it all again: wait long.
const PRIME_TIMEOUT_MS: u64 = 30_000;
/// Status is a quick local read on every node: a node slower than this is down.
const STATUS_TIMEOUT_MS: u64 = 2_000;
/// A node answers a note request within its 3 s deadline (see
/// `runtime::notes::NOTE_TIMEOUT`); wait a little longer than that.
const NOTE_TIMEOUT_MS: u64 = 5_000;
/// Connecting takes a round trip; more than this means the node is down.
const CONNECT_TIMEOUT_MS_MAX: u64 = 1_000;

/// The command-line client of a raftlb cluster.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// The cluster's membership file.
    #[arg(long, default_value = "nodes.txt", global = true)]
    nodes: PathBuf,
    /// The cluster key that signs the authenticated admin commands [default:
    /// cluster.key beside the nodes file]
    #[arg(long, global = true, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Give up on a node after this many ms [default: 30000 for prime, 5000 for note, 2000 for status, 10000 per bench request]
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    timeout_ms: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the N-th prime, asking the nodes in nodes.txt order.
    Prime {
        /// A decimal integer, at least 1 (the nodes' --max-n is the upper bound).
        #[arg(allow_hyphen_values = true)]
        n: String,
    },
    /// Print the nodes and the servers' load.
    Status {
        /// Print the raw /status JSON of the first node that answers.
        #[arg(long)]
        json: bool,
    },
    /// Read or write the replicated note.
    Note {
        #[command(subcommand)]
        action: NoteAction,
    },
    /// Write a new cluster key (32 random bytes as hex, mode 0600) to FILE,
    /// never over an existing file. Give nodes and daemons the same file
    /// (`--key FILE`, or cluster.key beside nodes.txt).
    Keygen {
        /// Where to write the key, e.g. cluster.key beside nodes.txt.
        file: PathBuf,
    },
    /// Change the load table by a committed, signed entry (needs the cluster key).
    Server {
        #[command(subcommand)]
        action: ServerAction,
    },
    /// Load generators for the benchmarks: closed-loop keep-alive clients that
    /// report throughput and latency percentiles (nodes.txt is not read).
    Bench {
        #[command(subcommand)]
        load: BenchLoad,
    },
}

#[derive(Subcommand, Debug)]
enum BenchLoad {
    /// GET /N on the target: a raftlb node, a raftlb-worker, HAProxy, nginx.
    Prime {
        #[command(flatten)]
        common: BenchCommon,
        /// The N of every request.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
        n: u64,
        /// Client threads, each with one connection and one request at a time.
        #[arg(short, long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
        concurrency: u16,
    },
    /// PUT /note with a unique body per request (or an etcd put with --etcd).
    Note {
        #[command(flatten)]
        common: BenchCommon,
        /// Client threads, each with one connection and one request at a time.
        #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
        concurrency: u16,
        /// The size of each written value.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=32768))]
        size_bytes: u16,
        /// Write to etcd 3.4's gateway instead: POST /v3/kv/put, base64 JSON.
        #[arg(long)]
        etcd: bool,
    },
}

/// The flags both loads share.
#[derive(clap::Args, Debug)]
struct BenchCommon {
    /// http://HOST:PORT
    #[arg(long)]
    target: String,
    /// The measured window, after the warm-up.
    #[arg(long, default_value_t = 10.0, value_parser = window_secs)]
    duration_secs: f64,
    /// Answers during the first seconds are not counted.
    #[arg(long, default_value_t = 1.0, value_parser = warmup_secs)]
    warmup_secs: f64,
    /// End the window once this many requests (ok or failed) were counted.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_requests: Option<u64>,
    /// Print one JSON object instead of the human line.
    #[arg(long)]
    json: bool,
}

/// Seconds, 0 < s <= one day.
fn window_secs(text: &str) -> Result<f64, String> {
    let secs = warmup_secs(text)?;
    if secs > 0.0 {
        Ok(secs)
    } else {
        Err("must be more than 0".into())
    }
}

/// Seconds, 0 <= s <= one day.
fn warmup_secs(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if (0.0..=86_400.0).contains(&secs) => Ok(secs),
        _ => Err("must be a number of seconds from 0 to 86400".into()),
    }
}

#[derive(Subcommand, Debug)]
enum NoteAction {
    /// Print the note exactly (linearizable: it includes every write that returned).
    Get,
    /// Replace the note with TEXT ("-" reads it from standard input); at most 32 KiB.
    Set {
        #[arg(allow_hyphen_values = true)]
        text: String,
    },
}

#[derive(Subcommand, Debug)]
enum ServerAction {
    /// Remove server ID from the agreed table (a committed entry, signed with
    /// the cluster key). A server whose daemon still reports comes back with
    /// its next report; stop the daemon first.
    Forget {
        /// The server's id as `raftlb status` shows it.
        id: String,
    },
}

/// How a command ended badly; each maps to an exit code.
enum Exit {
    Usage(String),
    Failed(Vec<String>),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(Exit::Usage(message)) => {
            eprintln!("raftlb: {message}");
            ExitCode::from(2)
        }
        Err(Exit::Failed(lines)) => {
            for line in lines {
                eprintln!("raftlb: {line}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Exit> {
    // clap exits 2 on bad usage and 0 for --help, as SPEC wants.
    let cli = Cli::parse();
    // Only the commands that talk to the cluster read nodes.txt.
    let load_nodes = || Nodes::load(&cli.nodes).map_err(|e| Exit::Usage(e.to_string()));
    let timeouts = |default_ms: u64| {
        let total_ms = cli.timeout_ms.unwrap_or(default_ms);
        Timeouts {
            connect: Duration::from_millis(total_ms.min(CONNECT_TIMEOUT_MS_MAX)),
            total: Duration::from_millis(total_ms),
        }
    };
    match cli.command {
        Command::Prime { n } => {
            let n = prime::check_n(&n).map_err(Exit::Usage)?;
            let nodes = load_nodes()?;
            let digits = prime::prime(nodes.entries(), n, timeouts(PRIME_TIMEOUT_MS))
                .map_err(|f| failure("prime", f))?;
            println!("{digits}");
        }
        Command::Status { json: true } => {
            let nodes = load_nodes()?;
            let body = view::raw_json(nodes.entries(), timeouts(STATUS_TIMEOUT_MS))
                .map_err(|f| failure("status", f))?;
            println!("{}", body.trim_end());
        }
        Command::Note {
            action: NoteAction::Get,
        } => {
            let nodes = load_nodes()?;
            let text = note::get(nodes.entries(), timeouts(NOTE_TIMEOUT_MS))
                .map_err(|f| failure("note get", f))?;
            // Exact bytes for a pipe; a terminal gets its prompt on a new line.
            let mut out = std::io::stdout().lock();
            let newline = !text.ends_with('\n') && !text.is_empty() && out.is_terminal();
            out.write_all(text.as_bytes())
                .and_then(|()| {
                    if newline {
                        out.write_all(b"\n")
                    } else {
                        Ok(())
                    }
                })
                .and_then(|()| out.flush())
                .map_err(|e| Exit::Failed(vec![format!("note get: cannot write the note: {e}")]))?;
        }
        Command::Note {
            action: NoteAction::Set { text },
        } => {
            let text = if text == "-" {
                let mut buf = String::new();
                std::io::stdin()
                    .read_to_string(&mut buf)
                    .map_err(|e| Exit::Usage(format!("note set: cannot read stdin: {e}")))?;
                buf
            } else {
                text
            };
            note::check_text(&text).map_err(|e| Exit::Usage(format!("note set: {e}")))?;
            let nodes = load_nodes()?;
            let (node, answer) = note::set(nodes.entries(), &text, timeouts(NOTE_TIMEOUT_MS))
                .map_err(|f| failure("note set", f))?;
            println!("{answer} (via node {node})");
        }
        Command::Status { json: false } => {
            let nodes = load_nodes()?;
            let views = view::fetch(nodes.entries(), timeouts(STATUS_TIMEOUT_MS));
            print!("{}", view::render(&views));
            if views.iter().all(|v| v.status.is_err()) {
                return Err(Exit::Failed(vec!["status: no node answered".into()]));
            }
        }
        Command::Server {
            action: ServerAction::Forget { id },
        } => {
            let nodes = load_nodes()?;
            let keys = raftlb::client::auth::load(cli.key.as_deref(), &cli.nodes)
                .map_err(|e| Exit::Usage(format!("server forget: {e}")))?;
            let (node, answer) =
                admin::forget(nodes.entries(), &keys, &id, timeouts(NOTE_TIMEOUT_MS))
                    .map_err(|f| failure("server forget", f))?;
            println!("{answer} (via node {node})");
        }
        Command::Keygen { file } => {
            raftlb::auth::keygen(&file).map_err(|e| Exit::Failed(vec![format!("keygen: {e}")]))?;
            println!("wrote a new cluster key to {}", file.display());
        }
        Command::Bench { load } => {
            let timeout_ms = cli.timeout_ms.unwrap_or(bench::REQUEST_TIMEOUT_MS_DEFAULT);
            bench(load, Duration::from_millis(timeout_ms))?;
        }
    }
    Ok(())
}

/// `raftlb bench …`: runs the load, prints the report; exit 1 when no
/// request succeeded.
fn bench(load: BenchLoad, request_timeout: Duration) -> Result<(), Exit> {
    let (load, common, concurrency) = match load {
        BenchLoad::Prime {
            common,
            n,
            concurrency,
        } => (bench::Load::Prime { n }, common, concurrency),
        BenchLoad::Note {
            common,
            concurrency,
            size_bytes,
            etcd,
        } => {
            let size_bytes = usize::from(size_bytes);
            let load = if etcd {
                bench::Load::EtcdPut { size_bytes }
            } else {
                bench::Load::Note { size_bytes }
            };
            (load, common, concurrency)
        }
    };
    let options = bench::Options {
        load,
        target: bench::Target::parse(&common.target).map_err(Exit::Usage)?,
        concurrency: usize::from(concurrency),
        warmup: Duration::from_secs_f64(common.warmup_secs),
        duration: Duration::from_secs_f64(common.duration_secs),
        max_requests: common.max_requests,
        request_timeout,
    };
    let command = format!("bench {}", load.name());
    let summary =
        bench::run(&options).map_err(|e| Exit::Failed(vec![format!("{command}: {e}")]))?;
    if common.json {
        let json = serde_json::to_string(&summary).expect("a summary serializes");
        println!("{json}");
    } else {
        println!("{}", summary.line());
    }
    if summary.ok > 0 {
        return Ok(());
    }
    let worst = (summary.worst_failure)
        .map(|w| format!("; most failures: {w}"))
        .unwrap_or_else(|| "; no request was answered in the window".into());
    Err(Exit::Failed(vec![format!(
        "{command}: no request succeeded{worst}"
    )]))
}

/// A 400 is bad usage (the request is wrong, as every node would say); any
/// other refusal or all nodes failing is a failed operation, one line per node.
fn failure(command: &str, failure: Failure) -> Exit {
    match failure {
        Failure::Refused { status: 400, .. } => Exit::Usage(format!("{command}: {failure}")),
        Failure::Refused { .. } => Exit::Failed(vec![format!("{command}: {failure}")]),
        Failure::AllFailed(nodes) => {
            let mut lines: Vec<String> = nodes.iter().map(ToString::to_string).collect();
            lines.push(format!("{command}: every node failed"));
            Exit::Failed(lines)
        }
    }
}
