//! Prime requests through a balancer: raftlb (one follower node) beside HAProxy
//! and nginx in front of the same three workers, and straight to one worker;
//! then the node and HAProxy each under a slowloris attack (`slowloris.rs`)
//! from another address, against the same load without it. Servers of unequal
//! speed are `machines.rs`'s.
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

use crate::loadgen::{self, median, thousands, Load};
use crate::proxies::{self, Proxy};
use crate::slowloris::{self, Attack, Probe, Tally};
use crate::support::Cluster;
use crate::table::{Report, Row};
use crate::Settings;

pub const CLIENTS: usize = 64;
const N: &str = "100";
/// raftlb's req/s over HAProxy leastconn's at N=100 (issue 12's goal).
const HAPROXY_GOAL_RATIO: f64 = 1.1;
/// raftlb's req/s under slowloris over the same without (issue 12's goal).
const SLOWLORIS_GOAL_RATIO: f64 = 0.9;
/// Rounds of (without, with) per system: the row shows the median of each.
const SLOWLORIS_ROUNDS: usize = 3;
/// After the attack starts and before the load: three ticks, so that every
/// refusal has happened and the admitted connections are held.
const SLOWLORIS_SETTLE: Duration = Duration::from_secs(3);

/// The systems measured, by base URL.
struct Targets {
    node: String,
    /// The node's port, for the slowloris attacker.
    node_port: u16,
    /// "raftlb node B", for the commands.
    node_name: String,
    /// The node's `/metrics`, whose forward counts show where its requests went.
    node_metrics: String,
    proxies: Vec<Proxy>,
    worker: String,
}

/// `proxies::haproxy` or `proxies::nginx`.
type Start = fn(proxies::Setup, &mut Report) -> Result<Proxy, String>;

pub fn run(cluster: &Cluster, settings: &Settings, report: &mut Report) {
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    let follower = (leader + 1) % cluster.nodes.len();
    report.note(format!(
        "balancing: raftlb is measured through follower {} (leader {}); daemons report every {} ms with --pid",
        cluster.ids[follower], cluster.ids[leader], cluster.options.report_interval_ms
    ));
    let mut proxies = Vec::new();
    let [haproxy, nginx] = proxies::Setup::least(&cluster.worker_ports, "balancing");
    for (start, setup) in [
        (proxies::haproxy as Start, haproxy),
        (proxies::nginx, nginx),
    ] {
        match start(setup, report) {
            Ok(p) => proxies.push(p),
            Err(e) => report.row(Row::error("balancing", "reference start", &e)),
        }
    }
    let targets = Targets {
        node: cluster.url(follower, ""),
        node_port: cluster.ports[follower],
        node_name: format!("raftlb node {}", cluster.ids[follower]),
        node_metrics: cluster.url(follower, "/metrics"),
        proxies,
        worker: format!("http://127.0.0.1:{}", cluster.worker_ports[0]),
    };
    if settings.runs("balancing") {
        uniform(&targets, settings, report);
    }
    if settings.runs("slowloris") {
        under_slowloris(&targets, settings, report);
    }
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
pub fn forwards(metrics_url: &str) -> BTreeMap<String, u64> {
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
    let mut references: Vec<(String, &str, &str)> = targets
        .proxies
        .iter()
        .map(|p| (p.url(), p.name, p.policy))
        .collect();
    references.push((targets.worker.clone(), "one worker, direct", ""));
    for (url, name, policy) in references {
        let mut row = Row::new(
            "balancing",
            format!("{what}: vs {name} {policy}").trim_end().to_string(),
            ours.summary(" req"),
        );
        match load(&url, name, settings, 1, report) {
            Ok(theirs) => {
                row = row
                    .against(format!("{name}: {}", theirs.summary(" req")))
                    .ratio(ours.per_sec, theirs.per_sec, "req/s, raftlb ÷ ref");
                if name == "haproxy" {
                    // Issue 12: a request stays on its connection's thread now.
                    let goal = HAPROXY_GOAL_RATIO;
                    row = row.goal(format!("≥ {goal}"), ours.per_sec >= goal * theirs.per_sec);
                }
            }
            Err(e) => row = row.against(format!("{name}: error: {e}")),
        }
        report.row(row);
    }
}

/// Prime loads through one system, each without and then with the attack.
#[derive(Default)]
struct Attacked {
    without: Vec<Load>,
    with: Vec<Load>,
    tallies: Vec<Tally>,
    /// The probe's times during the loads (ms; None: failed or over 5 s).
    probes_without: Vec<Option<f64>>,
    probes_with: Vec<Option<f64>>,
}

impl Attacked {
    /// One round against `url`: the load, then the attack on `port` and the
    /// same load under it; the attack is stopped (its sockets closed) after.
    fn round(
        &mut self,
        (url, port, label): (&str, u16, &str),
        settings: &Settings,
        report: &mut Report,
    ) -> Result<(), String> {
        let probe = Probe::start(port)?;
        let without = load(url, label, settings, 1, report);
        self.probes_without.extend(probe.stop());
        self.without.push(without?);
        let attack = Attack::start(port)?;
        std::thread::sleep(SLOWLORIS_SETTLE);
        let probe = Probe::start(port)?;
        let with = load(
            url,
            &format!("{label}, under slowloris"),
            settings,
            1,
            report,
        );
        self.probes_with.extend(probe.stop());
        self.tallies.push(attack.stop());
        self.with.push(with?);
        Ok(())
    }

    /// The medians' ratio, with ÷ without.
    fn ratio(&self) -> f64 {
        let per_sec = |l: &[Load]| median(l).map_or(f64::NAN, |l| l.per_sec);
        per_sec(&self.with) / per_sec(&self.without)
    }

    /// The probe's figures, without and with the attack.
    fn probes(&self) -> String {
        format!(
            "new connections from {} (`GET /health`, one each 100 ms): without {}; with {}",
            slowloris::PROBE_FROM,
            probe_summary(&self.probes_without),
            probe_summary(&self.probes_with)
        )
    }

    /// What the attacker saw over the rounds: "144 of the 1,000 open and
    /// unanswered at a time (median), 3,840 of 4,840 connects answered 503, 0
    /// cut by the target".
    fn attacker(&self) -> String {
        let sum = |f: fn(&Tally) -> u64| self.tallies.iter().map(f).sum::<u64>();
        let mut held: Vec<usize> = self.tallies.iter().map(Tally::held_median).collect();
        held.sort_unstable();
        let mut s = format!(
            "{} of the {} open and unanswered at a time (median), {} of {} connects answered 503, {} cut by the target",
            held.get(held.len() / 2).copied().unwrap_or(0),
            thousands(slowloris::CONNECTIONS as f64),
            thousands(sum(|t| t.refused) as f64),
            thousands(sum(|t| t.opened) as f64),
            thousands(sum(|t| t.cut) as f64),
        );
        let connecting = self.tallies.iter().map(Tally::connecting_max).max();
        if let Some(n) = connecting.filter(|n| *n > 0) {
            s += &format!(
                ", up to {n} at once still connecting (SYNs the full accept queue dropped)"
            );
        }
        let failed = sum(|t| t.open_failed);
        if failed > 0 {
            s += &format!(", {failed} could not be opened");
        }
        s
    }
}

/// "p50 0.41 ms, max 1,012 ms, 2 of 60 failed or over 5 s".
fn probe_summary(times: &[Option<f64>]) -> String {
    let mut ok: Vec<f64> = times.iter().flatten().copied().collect();
    ok.sort_by(f64::total_cmp);
    let Some(max) = ok.last() else {
        return format!("all {} failed", times.len());
    };
    let mut s = format!(
        "p50 {}, max {}",
        loadgen::ms(ok[ok.len() / 2]),
        loadgen::ms(*max)
    );
    let failed = times.len() - ok.len();
    if failed > 0 {
        s += &format!(", {failed} of {} failed or over 5 s", times.len());
    }
    s
}

fn summary(loads: &[Load]) -> String {
    median(loads).map_or("—".into(), |l| l.summary(" req"))
}

/// Primes through the node while slowloris holds connections against it,
/// against the same load without; then HAProxy's same pair. Rounds alternate
/// the systems, so that both see the same state of the machine.
fn under_slowloris(targets: &Targets, settings: &Settings, report: &mut Report) {
    let what = format!(
        "primes N={N}, {CLIENTS} clients from 127.0.0.1, {} slowloris connections from {} (a head byte/s each, reopened when closed) vs none",
        thousands(slowloris::CONNECTIONS as f64),
        slowloris::FROM
    );
    report.note(format!(
        "slowloris: the attacker (benches/compare/slowloris.rs) sends `GET /100 HTTP/1.1\\r\\nHost: …\\r\\nX-Slow: XXX…` a byte a second on each connection, bound to {}; a connection the target closes is opened again the next second",
        slowloris::FROM
    ));
    let haproxy = targets.proxies.iter().find(|p| p.name == "haproxy");
    let rounds = if settings.quick { 1 } else { SLOWLORIS_ROUNDS };
    let node_before = node_counters(&targets.node_metrics);
    let (mut ours, mut theirs) = (Attacked::default(), Attacked::default());
    for _ in 0..rounds {
        let node = (
            targets.node.as_str(),
            targets.node_port,
            targets.node_name.as_str(),
        );
        if let Err(e) = ours.round(node, settings, report) {
            return report.row(Row::error("slowloris", what, &e));
        }
        if let Some(h) = haproxy {
            if let Err(e) = theirs.round((&h.url(), h.port, h.name), settings, report) {
                report.note(format!("slowloris against haproxy failed: {e}"));
            }
        }
    }
    let node_after = node_counters(&targets.node_metrics);
    let delta = |name: &str| {
        let at = |m: &BTreeMap<String, u64>| m.get(name).copied().unwrap_or(0);
        at(&node_after).saturating_sub(at(&node_before))
    };
    let shown: Vec<String> = node_after
        .keys()
        .map(|k| format!("{k} +{}", delta(k)))
        .collect();
    report.note(format!(
        "slowloris: {}'s own counters over the rounds: {} (the attacker's last second of refusals is unread when it stops)",
        targets.node_name,
        shown.join(", ")
    ));
    let node = (
        delta("raftlb_http_connections_refused_total{cap=\"per_source\"}")
            + delta("raftlb_http_connections_refused_total{cap=\"total\"}"),
        delta("raftlb_http_timeouts_total{phase=\"head\"}"),
    );
    slowloris_rows(&what, targets, [&ours, &theirs], node, report);
}

/// The node's row (goal) and the row beside HAProxy's; `node` is what the node
/// counted: (refused over its caps, cut by its head timeout).
fn slowloris_rows(
    what: &str,
    targets: &Targets,
    [ours, theirs]: [&Attacked; 2],
    (refused, cut): (u64, u64),
    report: &mut Report,
) {
    let rounds = ours.with.len();
    let r = ours.ratio();
    report.row(
        Row::new(
            "slowloris",
            format!("{what}: through {}", targets.node_name),
            format!(
                "with: {}; attacker: {}; the node admits {} from one address (more wait in its accept queue) and counted {} refused over its caps and {} cut by its head timeout; {} ({rounds} round(s))",
                summary(&ours.with),
                ours.attacker(),
                raftlb::http::CONNECTIONS_PER_SOURCE_MAX,
                thousands(refused as f64),
                thousands(cut as f64),
                ours.probes(),
            ),
        )
        .against(format!("without: {}", summary(&ours.without)))
        .ratio(r, 1.0, "req/s, with ÷ without")
        .goal(
            format!("≥ {SLOWLORIS_GOAL_RATIO}"),
            r >= SLOWLORIS_GOAL_RATIO,
        ),
    );
    if theirs.with.is_empty() || theirs.without.is_empty() {
        return;
    }
    report.row(
        Row::new(
            "slowloris",
            format!("{what}: raftlb's with ÷ without vs haproxy's (the balancing config: timeout client 30s, no timeout http-request)"),
            format!("raftlb: {r:.2}"),
        )
        .against(format!(
            "haproxy: {:.2}; with: {}; without: {}; attacker: {}; {}",
            theirs.ratio(),
            summary(&theirs.with),
            summary(&theirs.without),
            theirs.attacker(),
            theirs.probes()
        ))
        .ratio(r, theirs.ratio(), "raftlb's ÷ haproxy's"),
    );
}

/// The node's counters that show the defence: connections refused over the
/// caps, and cut by the timeouts.
fn node_counters(metrics_url: &str) -> BTreeMap<String, u64> {
    let agent = crate::http::agent(Duration::from_secs(2));
    let Some((200, text)) = crate::http::get(&agent, metrics_url) else {
        return BTreeMap::new();
    };
    text.lines()
        .filter(|l| {
            l.starts_with("raftlb_http_connections_refused_total{")
                || l.starts_with("raftlb_http_timeouts_total{")
        })
        .filter_map(|l| {
            let (name, count) = l.rsplit_once(' ')?;
            Some((name.to_string(), count.trim().parse().ok()?))
        })
        .collect()
}
