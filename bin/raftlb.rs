//! `raftlb`: the command-line client of a raftlb cluster.
//!
//! Flag parsing, printing and exit codes only; the work is in `raftlb::client`.
//! Exit codes: 0 success; 1 the operation failed (every node failed, or no
//! node answered `status`); 2 bad usage or configuration, including an N that
//! a node refused with 400.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use raftlb::client::failover::Failure;
use raftlb::client::http::Timeouts;
use raftlb::client::{note, prime, view};
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
    /// Give up on a node after this many ms [default: 30000 for prime, 5000 for note, 2000 for status]
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
    let nodes = Nodes::load(&cli.nodes).map_err(|e| Exit::Usage(e.to_string()))?;
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
            let digits = prime::prime(nodes.entries(), n, timeouts(PRIME_TIMEOUT_MS))
                .map_err(|f| failure("prime", f))?;
            println!("{digits}");
        }
        Command::Status { json: true } => {
            let body = view::raw_json(nodes.entries(), timeouts(STATUS_TIMEOUT_MS))
                .map_err(|f| failure("status", f))?;
            println!("{}", body.trim_end());
        }
        Command::Note {
            action: NoteAction::Get,
        } => {
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
            let (node, answer) = note::set(nodes.entries(), &text, timeouts(NOTE_TIMEOUT_MS))
                .map_err(|f| failure("note set", f))?;
            println!("{answer} (via node {node})");
        }
        Command::Status { json: false } => {
            let views = view::fetch(nodes.entries(), timeouts(STATUS_TIMEOUT_MS));
            print!("{}", view::render(&views));
            if views.iter().all(|v| v.status.is_err()) {
                return Err(Exit::Failed(vec!["status: no node answered".into()]));
            }
        }
    }
    Ok(())
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
