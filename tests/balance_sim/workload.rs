//! The requests: costs drawn from the mixed N distribution, and the arrivals
//! (open loop at a fixed mean rate, or closed-loop clients' sequences), drawn
//! once per seed so every policy replays the same ones.

use std::sync::OnceLock;

use raftlb::raft::Rng;

/// Share of requests that are expensive (a large N), in parts per thousand.
const EXPENSIVE_PER_MILLE: u64 = 100;

/// One request as drawn: what the node can estimate from N, and what it costs.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    /// Expected worker time from N, in ms of one core (what
    /// `server::prime::expected_worker_ms` gives a node).
    pub cost_estimate_ms: f64,
    /// What it really takes, in ms of one core: the estimate is within a
    /// factor of about 1.3 of it, as a fit of the worker benchmark is.
    pub work_ms: f64,
    /// The balancer node it arrives at (five doors: DNS round robin).
    pub node: usize,
    /// Drawn from the expensive class (a large N), for per-class figures.
    pub costly: bool,
}

pub fn uniform(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Most requests are cheap (0.05..1 ms, log-uniform: small N), a tenth cost
/// 10..50 ms (N in the hundreds of millions).
pub fn draw(rng: &mut Rng, nodes: usize) -> Request {
    let costly = rng.chance(EXPENSIVE_PER_MILLE, 1000);
    let cost_estimate_ms = if costly {
        10.0 + 40.0 * uniform(rng)
    } else {
        0.05 * 20f64.powf(uniform(rng))
    };
    let work_ms = cost_estimate_ms * 1.3f64.powf(2.0 * uniform(rng) - 1.0);
    let node = rng.range(0, nodes as u64) as usize;
    Request {
        cost_estimate_ms,
        work_ms,
        node,
        costly,
    }
}

/// The mean work of a request, measured on many draws (for open-loop rates)
/// once per process.
pub fn mean_work_ms() -> f64 {
    static MEAN: OnceLock<f64> = OnceLock::new();
    *MEAN.get_or_init(|| {
        let mut rng = Rng::new(12345);
        let draws = 200_000;
        (0..draws).map(|_| draw(&mut rng, 1).work_ms).sum::<f64>() / draws as f64
    })
}

/// Open loop: Poisson arrivals at `rate_per_ms` until `duration_ms`.
pub fn open_arrivals(
    seed: u64,
    rate_per_ms: f64,
    duration_ms: f64,
    nodes: usize,
) -> Vec<(f64, Request)> {
    let mut rng = Rng::new(seed);
    let mut t = 0.0;
    let mut out = Vec::new();
    loop {
        t += -(1.0 - uniform(&mut rng)).ln() / rate_per_ms;
        if t >= duration_ms {
            return out;
        }
        out.push((t, draw(&mut rng, nodes)));
    }
}

/// Closed loop: one client's requests, drawn as it sends them from a
/// generator of its own, so every policy sees the same sequence.
pub struct Client {
    rng: Rng,
    node: usize,
}

impl Client {
    /// Client `index` of a run with `seed`, at node `index % nodes`.
    pub fn new(seed: u64, index: usize, nodes: usize) -> Client {
        Client {
            rng: Rng::derived(seed ^ 0xc1e7, index as u64),
            node: index % nodes,
        }
    }

    pub fn next(&mut self) -> Request {
        Request {
            node: self.node,
            ..draw(&mut self.rng, 1)
        }
    }
}
