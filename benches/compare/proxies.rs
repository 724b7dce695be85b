//! The balancing references: HAProxy (`balance leastconn`) and nginx
//! (`least_conn`) in front of the same three workers raftlb forwards to.
//!
//! Our own instances only: config, pid file, logs and temp paths in a temp dir,
//! on a free loopback port, in the foreground; any system service the Debian
//! packages started is neither used nor touched. Both keep connections to the
//! workers alive, as raftlb's forwarder does, so that no side pays a TCP
//! handshake per request. Both get one thread or process per CPU (HAProxy's
//! default `nbthread`; `worker_processes` set to the same for nginx), as
//! raftlb's node has a thread pool that can use every CPU.

use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;

use crate::procs::{self, Guard};
use crate::support::free_port;
use crate::table::Report;

/// A running proxy and its files.
pub struct Proxy {
    pub name: &'static str,
    /// Its balancing policy as its config names it, for the rows.
    pub policy: &'static str,
    pub port: u16,
    /// Declared before `dir`: the process stops before its files go.
    _process: Guard,
    _dir: TempDir,
}

impl Proxy {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// HAProxy in front of `workers` (their ports), leastconn.
pub fn haproxy(workers: &[u16], report: &mut Report) -> Result<Proxy, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let port = free_port();
    let servers: String = workers
        .iter()
        .enumerate()
        .map(|(i, p)| format!("    server w{i} 127.0.0.1:{p} maxconn 1000\n"))
        .collect();
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
    balance leastconn
{servers}"#
    );
    let path = dir.path().join("haproxy.cfg");
    write(&path, &config)?;
    let args = vec!["-db".to_string(), "-f".into(), path.display().to_string()];
    report.command("balancing", format!("haproxy {}", args.join(" ")));
    report.configs.push(("haproxy.cfg".into(), config));
    let process = Guard::spawn("haproxy", "haproxy", &args, &dir.path().join("haproxy.log"))?;
    started(("haproxy", "leastconn"), port, process, dir)
}

/// nginx in front of `workers` (their ports), least_conn.
pub fn nginx(workers: &[u16], report: &mut Report) -> Result<Proxy, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let port = free_port();
    let servers: String = workers
        .iter()
        .map(|p| format!("        server 127.0.0.1:{p};\n"))
        .collect();
    let d = dir.path().display().to_string();
    let config = format!(
        r#"worker_processes {cpus};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream workers {{
        least_conn;
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
        "balancing",
        format!(
            "nginx -p {d} -c {} -e {d}/error.log -g 'daemon off;'",
            path.display()
        ),
    );
    report.configs.push(("nginx.conf".into(), config));
    let process = Guard::spawn("nginx", "nginx", &args, &dir.path().join("nginx.log"))?;
    started(("nginx", "least_conn"), port, process, dir)
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Waits until the proxy answers a prime through a worker (10 s at most);
/// fails with its log when it exited or never answered.
fn started(
    (name, policy): (&'static str, &'static str),
    port: u16,
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
