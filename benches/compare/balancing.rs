//! Prime requests through a balancer: raftlb (one follower node) beside HAProxy
//! and nginx in front of the same three workers, and straight to one worker;
//! then the skewed case, an outside CPU hog pinned to the CPU that worker 0 is
//! pinned to, and the same loads again.
//!
//! Every load is `raftlb bench prime --n 100` at 64 closed-loop clients: N=100
//! costs the worker microseconds, so the figure is the balancer's own cost,
//! and 64 clients keep requests queued at every stage (3 workers, the proxy,
//! the node's connection threads), so it shows capacity and queueing, not one
//! client's round trip. A follower, not the leader, serves raftlb's side: any
//! node answers primes from its own applied table, and a follower shows that
//! nothing waits for the leader.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::loadgen::{self, Load};
use crate::procs::{self, Guard};
use crate::proxies::{self, Proxy};
use crate::support::Cluster;
use crate::table::{Report, Row};
use crate::Settings;

pub const CLIENTS: usize = 64;
const N: &str = "100";

/// The systems measured, by base URL.
struct Targets {
    node: String,
    /// "raftlb node B", for the commands.
    node_name: String,
    /// The node's `/metrics`, whose forward counts show where its requests went.
    node_metrics: String,
    proxies: Vec<Proxy>,
    worker: String,
}

pub fn run(cluster: &Cluster, settings: &Settings, report: &mut Report) {
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    let follower = (leader + 1) % cluster.nodes.len();
    report.note(format!(
        "balancing: raftlb is measured through follower {} (leader {}); daemons report every {} ms with --pid",
        cluster.ids[follower], cluster.ids[leader], cluster.options.report_interval_ms
    ));
    let mut proxies = Vec::new();
    for start in [proxies::haproxy, proxies::nginx] {
        match start(&cluster.worker_ports, report) {
            Ok(p) => proxies.push(p),
            Err(e) => report.row(Row::error("balancing", "reference start", &e)),
        }
    }
    let targets = Targets {
        node: cluster.url(follower, ""),
        node_name: format!("raftlb node {}", cluster.ids[follower]),
        node_metrics: cluster.url(follower, "/metrics"),
        proxies,
        worker: format!("http://127.0.0.1:{}", cluster.worker_ports[0]),
    };
    uniform(&targets, settings, report);
    skewed(cluster, &targets, settings, report);
}

/// One prime load against `url`.
fn load(
    url: &str,
    label: &str,
    settings: &Settings,
    warmup_secs: u64,
    report: &mut Report,
) -> Result<Load, String> {
    let mut args = loadgen::timed("prime", url, CLIENTS, settings.load_secs, warmup_secs);
    args.extend(["--n".into(), N.into()]);
    let (result, command) = loadgen::run(&args, label);
    report.command("balancing", command);
    result
}

/// raftlb's load, noting how the node spread it over the servers.
fn ours(
    targets: &Targets,
    settings: &Settings,
    warmup_secs: u64,
    case: &str,
    report: &mut Report,
) -> Result<Load, String> {
    let before = forwards(&targets.node_metrics);
    let result = load(
        &targets.node,
        &targets.node_name,
        settings,
        warmup_secs,
        report,
    );
    let after = forwards(&targets.node_metrics);
    let total: u64 = after
        .iter()
        .map(|(s, n)| n - before.get(s).unwrap_or(&0))
        .sum();
    let shares: Vec<String> = after
        .iter()
        .map(|(s, n)| {
            let share = (n - before.get(s).unwrap_or(&0)) as f64 * 100.0 / total.max(1) as f64;
            format!("{s} {share:.0}%")
        })
        .collect();
    report.note(format!(
        "balancing, {case}: raftlb's node forwarded (warm-up included) {}",
        shares.join(", ")
    ));
    result
}

/// Prime requests a node forwarded with success, by server, from its
/// `raftlb_forwards_total{server="…",result="ok"}` counters.
fn forwards(metrics_url: &str) -> BTreeMap<String, u64> {
    let agent = crate::http::agent(Duration::from_secs(2));
    let Some((200, text)) = crate::http::get(&agent, metrics_url) else {
        return BTreeMap::new();
    };
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("raftlb_forwards_total{server=\"")?;
            let (server, rest) = rest.split_once('"')?;
            let count = rest.strip_prefix(",result=\"ok\"} ")?;
            Some((server.to_string(), count.trim().parse().ok()?))
        })
        .collect()
}

fn uniform(targets: &Targets, settings: &Settings, report: &mut Report) {
    let what = format!("primes N={N}, {CLIENTS} clients, 3 workers");
    let ours = match ours(targets, settings, 1, "even", report) {
        Ok(l) => l,
        Err(e) => return report.row(Row::error("balancing", what, &e)),
    };
    let mut references: Vec<(String, &str)> =
        targets.proxies.iter().map(|p| (p.url(), p.name)).collect();
    references.push((targets.worker.clone(), "one worker, direct"));
    for (url, name) in references {
        let mut row = Row::new(
            "balancing",
            format!("{what}: vs {name}"),
            ours.summary(" req"),
        );
        match load(&url, name, settings, 1, report) {
            Ok(theirs) => {
                row = row
                    .against(format!("{name}: {}", theirs.summary(" req")))
                    .ratio(ours.per_sec, theirs.per_sec, "req/s, raftlb ÷ ref");
                if name == "haproxy" {
                    row = row.goal("≥ 1", ours.per_sec >= theirs.per_sec);
                }
            }
            Err(e) => row = row.against(format!("{name}: error: {e}")),
        }
        report.row(row);
    }
}

/// The CPU the hog and worker 0 share: the last one.
fn hog_cpu() -> String {
    (procs::cpus() - 1).to_string()
}

fn skewed(cluster: &Cluster, targets: &Targets, settings: &Settings, report: &mut Report) {
    let what = format!("skewed: CPU hog beside worker 0, primes N={N}, {CLIENTS} clients");
    let Some(worker) = cluster.workers[0].as_ref() else {
        return report.row(Row::error("balancing", what, "worker 0 is not running"));
    };
    let cpu = hog_cpu();
    let hog_args = [
        "-c".to_string(),
        cpu.clone(),
        "sh".into(),
        "-c".into(),
        "while :; do :; done".into(),
    ];
    let log = cluster.path("hog.log");
    let hog = match procs::pin(worker.pid(), &cpu)
        .and_then(|()| Guard::spawn("cpu hog", "taskset", &hog_args, &log))
    {
        Ok(hog) => hog,
        Err(e) => return report.row(Row::error("balancing", what, &e)),
    };
    report.command(
        "balancing",
        format!("taskset -a -p -c {cpu} <worker 0 pid>"),
    );
    report.command(
        "balancing",
        format!("taskset -c {cpu} sh -c 'while :; do :; done'   # the hog, beside worker 0"),
    );
    // Two report intervals and more, so that the agreed table has seen it.
    std::thread::sleep(Duration::from_millis(
        3 * cluster.options.report_interval_ms,
    ));
    // Two seconds of warm-up: the daemons report once a second, and the table
    // must hold a report taken under load before the measured window opens.
    let warmup_secs = 2;
    match ours(targets, settings, warmup_secs, "skewed", report) {
        Ok(ours) => {
            for proxy in &targets.proxies {
                let mut row = Row::new(
                    "balancing",
                    format!("{what}: vs {}", proxy.name),
                    ours.summary(" req"),
                );
                match load(&proxy.url(), proxy.name, settings, warmup_secs, report) {
                    Ok(theirs) => {
                        row = row
                            .against(format!("{}: {}", proxy.name, theirs.summary(" req")))
                            .ratio(ours.p99_ms, theirs.p99_ms, "p99, raftlb ÷ ref")
                            .goal("p99 lower (< 1)", ours.p99_ms < theirs.p99_ms);
                    }
                    Err(e) => row = row.against(format!("{}: error: {e}", proxy.name)),
                }
                report.row(row);
            }
        }
        Err(e) => report.row(Row::error("balancing", what, &e)),
    }
    drop(hog);
    let all = format!("0-{}", procs::cpus() - 1);
    if let Err(e) = procs::pin(worker.pid(), &all) {
        report.note(format!("could not unpin worker 0: {e}"));
    }
}
