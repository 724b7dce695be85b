//! `raftlb`: the command-line client of a raftlb cluster.
//!
//! Flag parsing, printing and exit codes only; the work is in `raftlb::client`.
//! Exit codes: 0 success; 1 the operation failed (every node failed, `status`
//! found no leader or no node, no `bench` request succeeded); 2 bad usage or
//! configuration, including an N that a node refused with 400.
//!
//! Each command has its own `--timeout-ms` whose help names its own default;
//! one given before the command applies to any command (scripts use that).

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use raftlb::client::discover::{self, Found};
use raftlb::client::failover::FailoverError;
use raftlb::client::http::Timeouts;
use raftlb::client::{admin, bench, member, note, prime, view};

// Each default below is also written in its command's `--timeout-ms` help.

/// A prime answer can take seconds for a large N, and a timeout makes the next
/// node compute it all again: wait long.
const PRIME_TIMEOUT_MS: u64 = 30_000;
/// Status is a quick local read on every node: a node slower than this is down.
const STATUS_TIMEOUT_MS: u64 = 2_000;
/// A node answers a note request within its 3 s deadline (see
/// `runtime::notes::NOTE_TIMEOUT`); wait a little longer than that.
const NOTE_TIMEOUT_MS: u64 = 5_000;
/// A membership change answers once committed, and a `replace` first waits
/// for the new node to catch up as a learner: wait long.
const MEMBER_TIMEOUT_MS: u64 = 60_000;
/// Connecting takes a round trip; more than this means the node is down.
const CONNECT_TIMEOUT_MS_MAX: u64 = 1_000;

/// The command-line client of a raftlb cluster.
#[derive(Parser, Debug)]
// Our own `help` command, so that `raftlb help --help` is help, not an error.
#[command(name = "raftlb", version, disable_help_subcommand = true)]
struct Cli {
    /// The cluster's nodes file [default: $RAFTLB_NODES (a nodes file, or
    /// ID=HOST:PORT,ID=HOST:PORT,…), else ./nodes.txt]
    #[arg(long, global = true, value_name = "FILE")]
    nodes: Option<PathBuf>,
    /// The cluster key that signs the authenticated admin commands [default:
    /// cluster.key beside the nodes file]
    #[arg(long, global = true, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Give up on a node after this many ms, for any command (each command's
    /// --help gives its own default)
    #[arg(long, value_parser = timeout_ms)]
    timeout_ms: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

/// A `--timeout-ms`: 1 ms to 10 minutes.
fn timeout_ms(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(ms) if (1..=600_000).contains(&ms) => Ok(ms),
        _ => Err("must be a whole number of ms from 1 to 600000".into()),
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the N-th prime, asking the nodes in the nodes file's order.
    Prime {
        /// A whole number from 1 to the nodes' --max-n (10000000000 by default).
        #[arg(allow_hyphen_values = true)]
        n: String,
        /// Also print (on stderr) which node and which server answered, and in
        /// how long.
        #[arg(short, long)]
        verbose: bool,
        /// Give up on a node after this many ms (a large N takes seconds, and
        /// the next node would compute it again) [default: 30000]
        #[arg(long, value_parser = timeout_ms)]
        timeout_ms: Option<u64>,
    },
    /// Print the nodes (nodes.txt's, then the members a node's /status adds)
    /// and the servers' load, then the leader or NO LEADER; exit 1 when there
    /// is no leader.
    Status {
        /// Print the raw /status JSON of the first node that answers.
        #[arg(long)]
        json: bool,
        /// A node slower than this many ms is shown down [default: 2000]
        #[arg(long, value_parser = timeout_ms)]
        timeout_ms: Option<u64>,
    },
    /// Read or write the replicated note.
    Note {
        #[command(subcommand)]
        action: NoteAction,
        /// Give up on a node after this many ms (a node answers within its own
        /// 3 s deadline) [default: 5000]
        #[arg(long, global = true, value_parser = timeout_ms)]
        timeout_ms: Option<u64>,
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
    /// Show or change the cluster's membership: committed configuration
    /// changes, one at a time, signed with the cluster key; a new member
    /// catches up as a non-voting learner first.
    Member {
        #[command(subcommand)]
        action: MemberAction,
    },
    /// Print this help, or the help of the given command (`raftlb help note set`).
    Help {
        /// A command and its subcommands, e.g. `note set`.
        command: Vec<String>,
    },
    /// Load generators for the benchmarks: closed-loop keep-alive clients that
    /// report throughput and latency percentiles. They talk to --target
    /// alone: --nodes, RAFTLB_NODES and --key are not used.
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
        #[arg(long, default_value_t = 100,
              value_parser = clap::value_parser!(u64).range(1..=raftlb::primes::MAX_N))]
        n: u64,
        /// A mixed load instead of --n: this share of the requests draw N from
        /// LO-HI (log-uniform), the rest from --cheap-n; the same stream for
        /// the same --seed.
        #[arg(long, value_name = "LO-HI", value_parser = n_range, conflicts_with = "n")]
        costly_n: Option<bench::mix::NRange>,
        /// The mixed load's cheap N.
        #[arg(long, value_name = "LO-HI", default_value = "1000-100000", value_parser = n_range,
              requires = "costly_n")]
        cheap_n: bench::mix::NRange,
        /// The mixed load's costly requests, in percent.
        #[arg(long, default_value_t = 10.0, value_parser = percent, requires = "costly_n")]
        costly_percent: f64,
        /// The mixed load's seed.
        #[arg(long, default_value_t = 1, requires = "costly_n")]
        seed: u64,
        /// Added to every N of the mixed load: the same costs, other N, so that
        /// the workers' caches do not answer from an earlier run.
        #[arg(long, default_value_t = 0, requires = "costly_n")]
        n_offset: u64,
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
    /// http://HOST:PORT; given more than once, the client threads take
    /// turns over them (as DNS round robin spreads clients).
    #[arg(long, required = true)]
    target: Vec<String>,
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
    /// A request not answered in this many ms counts as failed [default: 10000]
    #[arg(long, value_parser = timeout_ms)]
    timeout_ms: Option<u64>,
    /// Open loop: this many requests per second in all, each thread sending
    /// its share on schedule, latency counted from when a request was due.
    #[arg(long, value_parser = rate)]
    rate: Option<f64>,
}

/// `LO-HI`, two N within the default max-n.
fn n_range(text: &str) -> Result<bench::mix::NRange, bench::mix::BadRange> {
    bench::mix::NRange::parse(text, raftlb::primes::MAX_N)
}

/// 0 <= p <= 100.
fn percent(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err("must be a number from 0 to 100".into()),
    }
}

/// Requests per second, 0 < r <= 1,000,000.
fn rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 1e6 => Ok(r),
        _ => Err("must be a number of requests per second above 0, at most 1000000".into()),
    }
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
        /// The new note, UTF-8, at most 32768 bytes; "-" reads it from
        /// standard input.
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
        /// Give up on a node after this many ms [default: 5000]
        #[arg(long, value_parser = timeout_ms)]
        timeout_ms: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
enum MemberAction {
    /// Print the current configuration from the first node that answers:
    /// each member's id, address, and voter or learner; `*` marks the leader.
    List {
        /// Give up on a node after this many ms [default: 2000]
        #[arg(long, value_parser = timeout_ms)]
        timeout_ms: Option<u64>,
    },
    /// Add node ID at HOST:PORT: it joins as a learner and votes once caught
    /// up. Start it first with a nodes file that lists it and the members.
    Add {
        /// The new node's id (1-32 letters, digits, '-' or '_').
        id: String,
        /// Its address, HOST:PORT (UDP for Raft, TCP for HTTP).
        addr: String,
        /// Give up after this many ms (the node answers once the change
        /// committed) [default: 60000]
        #[arg(long, value_parser = timeout_ms)]
        timeout_ms: Option<u64>,
    },
    /// Remove node ID from the configuration.
    Remove {
        /// The id of the node to remove.
        id: String,
        /// Give up after this many ms [default: 60000]
        #[arg(long, value_parser = timeout_ms)]
        timeout_ms: Option<u64>,
    },
    /// Replace node OLD by node NEW at HOST:PORT: NEW catches up as a
    /// learner, then takes OLD's place.
    Replace {
        /// The node that leaves.
        old: String,
        /// The node that takes its place (another id).
        new: String,
        /// NEW's address, HOST:PORT.
        addr: String,
        /// Give up after this many ms (NEW must catch up first) [default: 60000]
        #[arg(long, value_parser = timeout_ms)]
        timeout_ms: Option<u64>,
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
    // Only the commands that talk to the cluster look for the nodes.
    let find_nodes = || {
        let env = std::env::var(discover::NODES_VAR).ok();
        discover::find(cli.nodes.as_deref(), env.as_deref()).map_err(|e| Exit::Usage(e.to_string()))
    };
    // The command's own --timeout-ms, else the one before the command, else
    // the command's default.
    let timeouts = |own_ms: Option<u64>, default_ms: u64| {
        let total_ms = own_ms.or(cli.timeout_ms).unwrap_or(default_ms);
        Timeouts {
            connect: Duration::from_millis(total_ms.min(CONNECT_TIMEOUT_MS_MAX)),
            total: Duration::from_millis(total_ms),
        }
    };
    match cli.command {
        Command::Prime {
            n,
            verbose,
            timeout_ms,
        } => {
            let n = prime::check_n(&n).map_err(|bad| Exit::Usage(bad.to_string()))?;
            let found = find_nodes()?;
            let answer = prime::prime(
                found.nodes.entries(),
                n,
                timeouts(timeout_ms, PRIME_TIMEOUT_MS),
            )
            .map_err(|f| failure("prime", f))?;
            println!("{}", answer.digits);
            if verbose {
                eprintln!("{}", answer.describe());
            }
        }
        Command::Status {
            json: true,
            timeout_ms,
        } => {
            let found = find_nodes()?;
            let body = view::raw_json(
                found.nodes.entries(),
                timeouts(timeout_ms, STATUS_TIMEOUT_MS),
            )
            .map_err(|f| failure("status", f))?;
            println!("{}", body.trim_end());
        }
        Command::Status {
            json: false,
            timeout_ms,
        } => {
            let found = find_nodes()?;
            let views = view::fetch_with_members(
                found.nodes.entries(),
                timeouts(timeout_ms, STATUS_TIMEOUT_MS),
            );
            print!("{}", view::render(&views));
            if views.iter().all(|v| v.status.is_err()) {
                return Err(Exit::Failed(vec!["status: no node answered".into()]));
            }
            if view::leader(&views).is_none() {
                // The last line said why; the exit code lets scripts wait on it.
                return Err(Exit::Failed(Vec::new()));
            }
        }
        Command::Note { action, timeout_ms } => {
            note_command(action, find_nodes()?, timeouts(timeout_ms, NOTE_TIMEOUT_MS))?;
        }
        Command::Server {
            action: ServerAction::Forget { id, timeout_ms },
        } => {
            let found = find_nodes()?;
            let keys = raftlb::client::auth::load(cli.key.as_deref(), &found.key_beside)
                .map_err(|e| Exit::Usage(format!("server forget: {e}")))?;
            let (node, answer) = admin::forget(
                found.nodes.entries(),
                &keys,
                &id,
                timeouts(timeout_ms, NOTE_TIMEOUT_MS),
            )
            .map_err(|f| failure("server forget", f))?;
            println!("{answer} (via node {node})");
        }
        Command::Member { action } => member_command(action, &cli.key, find_nodes, timeouts)?,
        Command::Keygen { file } => {
            raftlb::auth::keygen(&file).map_err(|e| Exit::Failed(vec![format!("keygen: {e}")]))?;
            println!("wrote a new cluster key to {}", file.display());
        }
        Command::Help { command } => help(&command)?,
        Command::Bench { load } => {
            let own_ms = match &load {
                BenchLoad::Prime { common, .. } | BenchLoad::Note { common, .. } => {
                    common.timeout_ms
                }
            };
            let timeout = timeouts(own_ms, bench::REQUEST_TIMEOUT_MS_DEFAULT).total;
            bench(load, timeout)?;
        }
    }
    Ok(())
}

/// `raftlb help [COMMAND…]`: the help of the command named, as `--help` prints it.
fn help(names: &[String]) -> Result<(), Exit> {
    let mut command = Cli::command();
    command.build();
    let mut target = &mut command;
    for name in names {
        target = target
            .find_subcommand_mut(name)
            .ok_or_else(|| Exit::Usage(format!("help: no command {name:?}; see raftlb --help")))?;
    }
    target
        .print_help()
        .map_err(|e| Exit::Failed(vec![format!("help: cannot print: {e}")]))
}

/// `raftlb member list|add|remove|replace`: arguments are checked before the
/// nodes and the key are looked for.
fn member_command(
    action: MemberAction,
    key: &Option<PathBuf>,
    find_nodes: impl Fn() -> Result<Found, Exit>,
    timeouts: impl Fn(Option<u64>, u64) -> Timeouts,
) -> Result<(), Exit> {
    let usage = |command: &str, e: member::BadArgument| Exit::Usage(format!("{command}: {e}"));
    let (command, change, timeout_ms) = match action {
        MemberAction::List { timeout_ms } => {
            let found = find_nodes()?;
            let config = member::list(
                found.nodes.entries(),
                timeouts(timeout_ms, STATUS_TIMEOUT_MS),
            )
            .map_err(member_list_failure)?;
            print!("{}", member::render(&config));
            return Ok(());
        }
        MemberAction::Add {
            id,
            addr,
            timeout_ms,
        } => {
            let change = member::Change::add(&id, &addr).map_err(|e| usage("member add", e))?;
            ("member add", change, timeout_ms)
        }
        MemberAction::Remove { id, timeout_ms } => {
            let change = member::Change::remove(&id).map_err(|e| usage("member remove", e))?;
            ("member remove", change, timeout_ms)
        }
        MemberAction::Replace {
            old,
            new,
            addr,
            timeout_ms,
        } => {
            let change = member::Change::replace(&old, &new, &addr)
                .map_err(|e| usage("member replace", e))?;
            ("member replace", change, timeout_ms)
        }
    };
    let found = find_nodes()?;
    let keys = raftlb::client::auth::load(key.as_deref(), &found.key_beside)
        .map_err(|e| Exit::Usage(format!("{command}: {e}")))?;
    let timeouts = timeouts(timeout_ms, MEMBER_TIMEOUT_MS);
    match member::change(found.nodes.entries(), &keys, &change, timeouts) {
        Ok((node, answer)) => {
            println!("{answer}");
            eprintln!("raftlb: {command}: committed (via node {node})");
            Ok(())
        }
        Err(member::ChangeError::Unreachable(failures)) => {
            let mut lines: Vec<String> = failures.iter().map(ToString::to_string).collect();
            lines.push(format!(
                "{command}: {}",
                member::ChangeError::Unreachable(failures)
            ));
            Err(Exit::Failed(lines))
        }
        Err(e) => Err(Exit::Failed(vec![format!("{command}: {e}")])),
    }
}

/// `member list` fails with exit 1 whatever the nodes said (a 4xx to a GET
/// is not the user's usage), one line per node that failed.
fn member_list_failure(failure: FailoverError) -> Exit {
    match failure {
        FailoverError::AllFailed(nodes) => {
            let mut lines: Vec<String> = nodes.iter().map(ToString::to_string).collect();
            lines.push("member list: no node answered".to_string());
            Exit::Failed(lines)
        }
        refused => Exit::Failed(vec![format!("member list: {refused}")]),
    }
}

/// `raftlb note get|set`.
fn note_command(action: NoteAction, found: Found, timeouts: Timeouts) -> Result<(), Exit> {
    match action {
        NoteAction::Get => {
            let text =
                note::get(found.nodes.entries(), timeouts).map_err(|f| failure("note get", f))?;
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
                .map_err(|e| Exit::Failed(vec![format!("note get: cannot write the note: {e}")]))
        }
        NoteAction::Set { text } => {
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
            let (node, answer) = note::set(found.nodes.entries(), &text, timeouts)
                .map_err(|f| failure("note set", f))?;
            println!("{answer} (via node {node})");
            Ok(())
        }
    }
}

/// `raftlb bench …`: runs the load, prints the report; exit 1 when no
/// request succeeded.
fn bench(load: BenchLoad, request_timeout: Duration) -> Result<(), Exit> {
    let (load, common, concurrency) = match load {
        BenchLoad::Prime {
            common,
            n,
            costly_n,
            cheap_n,
            costly_percent,
            seed,
            n_offset,
            concurrency,
        } => {
            let load = match costly_n {
                None => bench::Load::Prime { n },
                Some(costly) => bench::Load::PrimeMix(bench::mix::Mix {
                    cheap: cheap_n,
                    costly,
                    costly_per_mille: (costly_percent * 10.0).round() as u64,
                    seed,
                    offset: n_offset,
                }),
            };
            (load, common, concurrency)
        }
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
        targets: (common.target.iter())
            .map(|t| bench::Target::parse(t))
            .collect::<Result<_, _>>()
            .map_err(|e: bench::BadTarget| Exit::Usage(e.to_string()))?,
        concurrency: usize::from(concurrency),
        warmup: Duration::from_secs_f64(common.warmup_secs),
        duration: Duration::from_secs_f64(common.duration_secs),
        max_requests: common.max_requests,
        request_timeout,
        rate_per_sec: common.rate,
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
fn failure(command: &str, failure: FailoverError) -> Exit {
    match failure {
        FailoverError::Refused { status: 400, .. } => Exit::Usage(format!("{command}: {failure}")),
        FailoverError::Refused { .. } => Exit::Failed(vec![format!("{command}: {failure}")]),
        FailoverError::AllFailed(nodes) => {
            let mut lines: Vec<String> = nodes.iter().map(ToString::to_string).collect();
            lines.push(format!("{command}: every node failed"));
            Exit::Failed(lines)
        }
    }
}
