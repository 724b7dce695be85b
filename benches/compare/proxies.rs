//! The balancing references: HAProxy (`balance leastconn`, `roundrobin`,
//! `random(2)`) and nginx (`least_conn`, round robin) in front of the same
//! three workers raftlb forwards to. Each counts the answers each worker gave
//! (`Proxy::answers`): HAProxy on its stats page, nginx in an access log of
//! `$upstream_addr`.
//!
//! Our own instances only: config, pid file, logs and temp paths in a temp dir,
//! on a free loopback port, in the foreground; any system service the Debian
//! packages started is neither used nor touched. Both keep connections to the
//! workers alive, as raftlb's forwarder does, so that no side pays a TCP
//! handshake per request. Both get one thread or process per CPU (HAProxy's
//! default `nbthread`; `worker_processes` set to the same for nginx), as
//! raftlb's node has a thread pool that can use every CPU.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;

use crate::procs::{self, Guard};
use crate::support::free_port;
use crate::table::Report;

/// What a proxy is started with.
#[derive(Clone, Copy)]
pub struct Setup<'a> {
    /// The workers' ports.
    pub workers: &'a [u16],
    /// The balancing policy as the config names it: for HAProxy `leastconn`,
    /// `roundrobin`, `random(2)`; for nginx `least_conn` or `round robin`.
    pub policy: &'static str,
    /// The bench section whose commands and configs these are.
    pub section: &'static str,
    /// nginx logs each request's worker, to count them (`Proxy::answers`);
    /// off where a log line per request would cost it throughput.
    pub count_answers: bool,
}

impl<'a> Setup<'a> {
    /// The least-connections policy, each proxy's own name for it.
    pub fn least(workers: &'a [u16], section: &'static str) -> [Setup<'a>; 2] {
        let setup = |policy| Setup {
            workers,
            policy,
            section,
            count_answers: false,
        };
        [setup("leastconn"), setup("least_conn")]
    }
}

/// How a proxy counts the answers of each worker.
enum Counter {
    /// HAProxy's stats page in CSV, on its own port.
    HaproxyStats { port: u16 },
    /// nginx's access log of `$upstream_addr`, a line per request.
    UpstreamLog(std::path::PathBuf),
    /// Not counted (nginx without its log).
    None,
}

/// A running proxy and its files.
pub struct Proxy {
    pub name: &'static str,
    /// Its balancing policy as its config names it, for the rows.
    pub policy: &'static str,
    pub port: u16,
    workers: Vec<u16>,
    counter: Counter,
    /// Declared before `dir`: the process stops before its files go.
    _process: Guard,
    _dir: TempDir,
}

impl Proxy {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// "haproxy random(2)".
    pub fn label(&self) -> String {
        format!("{} {}", self.name, self.policy)
    }

    /// The 2xx answers each worker gave through this proxy since it started,
    /// by worker port.
    pub fn answers(&self) -> Result<BTreeMap<u16, u64>, String> {
        match &self.counter {
            Counter::HaproxyStats { port } => {
                let agent = crate::http::agent(Duration::from_secs(2));
                let url = format!("http://127.0.0.1:{port}/stats;csv");
                match crate::http::get(&agent, &url) {
                    Some((200, csv)) => haproxy_answers(&csv, &self.workers),
                    other => Err(format!("{url}: {other:?}")),
                }
            }
            Counter::UpstreamLog(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Ok(upstream_answers(&text, &self.workers))
            }
            Counter::None => Err(format!("{} was started without its log", self.label())),
        }
    }
}

/// The `hrsp_2xx` of each server `w{i}` in HAProxy's stats CSV, by worker port.
fn haproxy_answers(csv: &str, workers: &[u16]) -> Result<BTreeMap<u16, u64>, String> {
    let mut lines = csv.lines();
    let header: Vec<&str> = (lines.next())
        .and_then(|h| h.strip_prefix("# "))
        .ok_or("no CSV header")?
        .split(',')
        .collect();
    let column =
        |name: &str| (header.iter().position(|c| *c == name)).ok_or(format!("no {name} column"));
    let (server, answers) = (column("svname")?, column("hrsp_2xx")?);
    let mut out = BTreeMap::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        let index = (fields.get(server))
            .and_then(|s| s.strip_prefix('w'))
            .and_then(|i| i.parse::<usize>().ok());
        if let (Some(port), Some(count)) = (
            index.and_then(|i| workers.get(i)),
            fields.get(answers).and_then(|n| n.parse::<u64>().ok()),
        ) {
            *out.entry(*port).or_insert(0) += count;
        }
    }
    Ok(out)
}

/// The requests each worker answered in an access log of `$upstream_addr`
/// (the last address when nginx tried several), by worker port.
fn upstream_answers(log: &str, workers: &[u16]) -> BTreeMap<u16, u64> {
    let mut out = BTreeMap::new();
    for line in log.lines() {
        let port = (line.rsplit(", ").next())
            .and_then(|addr| addr.rsplit_once(':'))
            .and_then(|(_, port)| port.trim().parse::<u16>().ok());
        if let Some(port) = port.filter(|p| workers.contains(p)) {
            *out.entry(port).or_insert(0) += 1;
        }
    }
    out
}

/// Keeps a config for BENCHMARKS.md once per title.
fn keep_config(report: &mut Report, title: String, config: &str) {
    if !report.configs.iter().any(|(t, _)| *t == title) {
        report.configs.push((title, config.to_string()));
    }
}

/// HAProxy in front of the workers, with the setup's policy.
pub fn haproxy(setup: Setup, report: &mut Report) -> Result<Proxy, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let port = free_port();
    let stats_port = free_port();
    let servers: String = setup
        .workers
        .iter()
        .enumerate()
        .map(|(i, p)| format!("    server w{i} 127.0.0.1:{p} maxconn 1000\n"))
        .collect();
    let policy = setup.policy;
    let config = format!(
        r#"global
    maxconn 4096

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    http-reuse always

frontend balancer
    bind 127.0.0.1:{port}
    default_backend workers

backend workers
    balance {policy}
{servers}
listen stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats
"#
    );
    let path = dir.path().join("haproxy.cfg");
    write(&path, &config)?;
    let args = vec!["-db".to_string(), "-f".into(), path.display().to_string()];
    report.command(setup.section, format!("haproxy {}", args.join(" ")));
    keep_config(
        report,
        format!("haproxy.cfg ({}, {policy})", setup.section),
        &config,
    );
    let process = Guard::spawn("haproxy", "haproxy", &args, &dir.path().join("haproxy.log"))?;
    let counter = Counter::HaproxyStats { port: stats_port };
    started(
        ("haproxy", policy),
        (port, setup.workers),
        counter,
        process,
        dir,
    )
}

/// nginx in front of the workers, with the setup's policy.
pub fn nginx(setup: Setup, report: &mut Report) -> Result<Proxy, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let port = free_port();
    let servers: String = setup
        .workers
        .iter()
        .map(|p| format!("        server 127.0.0.1:{p};\n"))
        .collect();
    let policy = setup.policy;
    // Round robin is nginx's default: no directive names it.
    let directive = match policy {
        "least_conn" => "least_conn;",
        _ => "",
    };
    let d = dir.path().display().to_string();
    let (access_log, counter) = if setup.count_answers {
        let log = format!("{d}/upstream.log");
        let counter = Counter::UpstreamLog(dir.path().join("upstream.log"));
        (
            format!("log_format upstream '$upstream_addr';\n    access_log {log} upstream;"),
            counter,
        )
    } else {
        ("access_log off;".to_string(), Counter::None)
    };
    let config = format!(
        r#"worker_processes {cpus};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    {access_log}
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream workers {{
        {directive}
{servers}        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://workers;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"#,
        cpus = procs::cpus()
    );
    let path = dir.path().join("nginx.conf");
    write(&path, &config)?;
    let args: Vec<String> = [
        "-p",
        &d,
        "-c",
        &path.display().to_string(),
        "-e",
        &format!("{d}/error.log"),
        "-g",
        "daemon off;",
    ]
    .map(str::to_string)
    .to_vec();
    report.command(
        setup.section,
        format!(
            "nginx -p {d} -c {} -e {d}/error.log -g 'daemon off;'",
            path.display()
        ),
    );
    keep_config(
        report,
        format!("nginx.conf ({}, {policy})", setup.section),
        &config,
    );
    let process = Guard::spawn("nginx", "nginx", &args, &dir.path().join("nginx.log"))?;
    started(
        ("nginx", policy),
        (port, setup.workers),
        counter,
        process,
        dir,
    )
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Waits until the proxy answers a prime through a worker (10 s at most);
/// fails with its log when it exited or never answered.
fn started(
    (name, policy): (&'static str, &'static str),
    (port, workers): (u16, &[u16]),
    counter: Counter,
    mut process: Guard,
    dir: TempDir,
) -> Result<Proxy, String> {
    let agent = crate::http::agent(Duration::from_secs(2));
    let url = format!("http://127.0.0.1:{port}/100");
    for _ in 0..100 {
        if let Some((200, body)) = crate::http::get(&agent, &url) {
            if body.trim() == "541" {
                return Ok(Proxy {
                    name,
                    policy,
                    port,
                    workers: workers.to_vec(),
                    counter,
                    _process: process,
                    _dir: dir,
                });
            }
        }
        if let Err(e) = process.check_running() {
            return Err(format!("{e}: {}", logs(dir.path())));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "{name} did not answer in 10 s: {}",
        logs(dir.path())
    ))
}

/// The proxy's log files, for an error message.
fn logs(dir: &Path) -> String {
    ["haproxy.log", "nginx.log", "error.log"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .collect::<Vec<_>>()
        .join("\n")
}
