//! The running system, measured: `cargo bench --bench cluster` (part of
//! `make bench`).
//!
//! One run on this machine, real processes on loopback:
//! - failover: SIGKILL the leader 20 times; time until the survivors agree on a
//!   new leader (polled every 5 ms), median / p90 / max;
//! - balancing: prime requests per second and p50/p99 latency at N=100 with 16
//!   keep-alive clients through one node, against the same load straight to
//!   one worker (the reference, same run, same client);
//! - replication: note writes per second and p50/p99 latency at 1, 16 and 64
//!   concurrent writers (each waits for its 200: committed by a majority with
//!   fsync, and applied), sent to the leader and spread over every node;
//! - footprint: RSS of an idle node.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::{wait_for, Cluster, Options};

const TRIALS: usize = 20;
const LOAD_SECS: u64 = 5;
const CLIENTS: usize = 16;

fn main() {
    let mut cluster = Cluster::start(Options {
        dead_after_ms: 3000,
        report_interval_ms: 1000,
        ..Options::default()
    });
    cluster.wait_for_leader(Duration::from_secs(20));
    cluster.wait_for_servers(&[true, true, true], Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    let rss = cluster.nodes[0]
        .as_ref()
        .map(|p| rss_kib(p.pid()))
        .unwrap_or(0);
    let (node_rps, node_p50, node_p99) = load(CLIENTS, &prime_on(cluster.url(0, "/100")));
    let worker_url = format!("http://127.0.0.1:{}/100", cluster.worker_ports[0]);
    let (worker_rps, worker_p50, worker_p99) = load(CLIENTS, &prime_on(worker_url));
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    let mut notes = Vec::new();
    for writers in [1, 16, 64] {
        let to_leader = load(writers, &note_on(vec![cluster.url(leader, "/note")]));
        let everywhere = load(
            writers,
            &note_on((0..5).map(|i| cluster.url(i, "/note")).collect()),
        );
        notes.push((writers, to_leader, everywhere));
    }
    let failovers = failovers(&mut cluster);

    println!("\n## raftlb cluster (5 nodes, 3 workers, loopback, one run)\n");
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| failover: SIGKILL of leader to agreed new leader, {TRIALS} trials | p50 {} ms, p90 {} ms, max {} ms |",
        pct(&failovers, 50),
        pct(&failovers, 90),
        pct(&failovers, 100)
    );
    println!(
        "| primes N=100 through one node, {CLIENTS} clients | {node_rps:.0} req/s, p50 {node_p50:.2} ms, p99 {node_p99:.2} ms |"
    );
    println!(
        "| primes N=100 straight to one worker, {CLIENTS} clients | {worker_rps:.0} req/s, p50 {worker_p50:.2} ms, p99 {worker_p99:.2} ms |"
    );
    println!(
        "| through node / direct throughput | {:.2} |",
        node_rps / worker_rps
    );
    for (writers, (l_ops, l_p50, l_p99), (e_ops, e_p50, e_p99)) in notes {
        println!(
            "| note writes, {writers} writers, to the leader | {l_ops:.0} writes/s, p50 {l_p50:.2} ms, p99 {l_p99:.2} ms |"
        );
        println!(
            "| note writes, {writers} writers, spread over all 5 nodes | {e_ops:.0} writes/s, p50 {e_p50:.2} ms, p99 {e_p99:.2} ms |"
        );
    }
    println!("| idle node RSS | {:.1} MiB |", rss as f64 / 1024.0);
}

/// One request of a closed-loop client: thread `t`'s `k`-th call.
type Call = dyn Fn(&ureq::Agent, usize, u64) + Sync;

/// `GET url`, expecting the 26th prime.
fn prime_on(url: String) -> impl Fn(&ureq::Agent, usize, u64) + Sync {
    move |agent, _, _| {
        let mut resp = agent.get(&url).call().expect("request succeeds");
        let body = resp.body_mut().read_to_string().expect("body");
        assert_eq!(body, "541");
    }
}

/// `PUT /note` of a 100-byte text unique to the call, round robin over `urls`.
fn note_on(urls: Vec<String>) -> impl Fn(&ureq::Agent, usize, u64) + Sync {
    move |agent, t, k| {
        let url = &urls[(t + k as usize) % urls.len()];
        let text = format!("{t:>8} {k:>12} {}", "n".repeat(78));
        let resp = agent
            .put(url)
            .send(text.as_bytes())
            .expect("request succeeds");
        assert_eq!(resp.status().as_u16(), 200, "note write");
    }
}

/// `count` percentile of sorted-on-the-fly millisecond samples.
fn pct(samples: &[u64], p: usize) -> u64 {
    let mut v = samples.to_vec();
    v.sort_unstable();
    if v.is_empty() {
        return 0;
    }
    v[((v.len() - 1) * p / 100).min(v.len() - 1)]
}

fn failovers(cluster: &mut Cluster) -> Vec<u64> {
    let mut times = Vec::new();
    for trial in 0..TRIALS {
        let old = cluster.wait_for_leader(Duration::from_secs(20));
        let start = Instant::now();
        cluster.kill_node(old);
        let new = loop {
            if let Some(l) = cluster.agreed_leader().filter(|l| *l != old) {
                break l;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no new leader in 20 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        times.push(start.elapsed().as_millis() as u64);
        eprintln!(
            "trial {trial}: {} -> {} in {} ms",
            cluster.ids[old], cluster.ids[new], times[trial]
        );
        cluster.restart_node(old);
        // Let the restarted node rejoin before the next kill.
        wait_for("the node to rejoin", Duration::from_secs(20), || {
            let s = cluster.status(old)?;
            s.leader.is_some().then_some(())
        });
    }
    times
}

/// Closed-loop load: `clients` threads, each with its own keep-alive agent,
/// calling `call` for LOAD_SECS. Returns (calls per second, p50 ms, p99 ms);
/// panics on any failure.
fn load(clients: usize, call: &Call) -> (f64, f64, f64) {
    let stop = AtomicBool::new(false);
    let mut all: Vec<f64> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..clients)
            .map(|t| {
                let stop = &stop;
                scope.spawn(move || {
                    // Per-phase timeouts, not a global one: with a global timeout
                    // ureq resolves the host on a new thread for every call, and
                    // the load generator would measure its own thread spawns.
                    let agent = ureq::Agent::new_with_config(
                        ureq::Agent::config_builder()
                            .timeout_connect(Some(Duration::from_secs(1)))
                            .timeout_recv_response(Some(Duration::from_secs(5)))
                            .build(),
                    );
                    let mut lat = Vec::new();
                    let mut k = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let start = Instant::now();
                        call(&agent, t, k);
                        lat.push(start.elapsed().as_secs_f64() * 1000.0);
                        k += 1;
                    }
                    lat
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(LOAD_SECS));
        stop.store(true, Ordering::Relaxed);
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("client thread"))
            .collect()
    });
    all.sort_by(f64::total_cmp);
    let q = |p: f64| all[((all.len() - 1) as f64 * p) as usize];
    (all.len() as f64 / LOAD_SECS as f64, q(0.5), q(0.99))
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}
