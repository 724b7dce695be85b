//! The policies compared, each one instance per balancer node with that node's
//! own counts: round robin, least connections, power of two choices on
//! connections, raftlb's choice before issue 13 (lowest `cpu + wait` plus
//! in-flight points), and raftlb's policy (`raftlb::balance`); raftlb's and
//! least connections with a queue at the node (`Kind::slots`), and raftlb's
//! with one for its costly requests only; and three
//! clairvoyant ones, not deployable, shown the servers' true state (`Truth`)
//! to bound what choosing a server alone can do.

use std::collections::BTreeMap;

use raftlb::balance::{Balancer, Candidate, Params, Ticket};
use raftlb::raft::Rng;

use super::Truth;

/// What a node's copy of the agreed table says of one server.
#[derive(Clone, Copy, Debug, Default)]
pub struct View {
    pub cpu: f64,
    pub wait: f64,
    /// When this node applied the report, in ms.
    pub applied_at_ms: f64,
}

pub trait Policy {
    /// The server a request of `cost` goes to. `truth` is given to the
    /// clairvoyant policy only (`Kind::clairvoyant`).
    fn choose(&mut self, views: &[View], cost: f64, now_ms: f64, truth: Option<&Truth>) -> usize;
    fn started(&mut self, request: u64, server: usize, cost: f64, now_ms: f64);
    fn finished(&mut self, request: u64, server: usize, service_ms: f64, now_ms: f64);
    /// As `choose`, among the servers with `free[s]` only (one at least).
    fn choose_free(
        &mut self,
        views: &[View],
        cost: f64,
        now_ms: f64,
        truth: Option<&Truth>,
        free: &[bool],
    ) -> usize {
        let chosen = self.choose(views, cost, now_ms, truth);
        if free[chosen] {
            chosen
        } else {
            (0..free.len()).find(|&s| free[s]).expect("a free server")
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    RoundRobin,
    LeastConn,
    P2c,
    Today,
    Raftlb,
    Oracle,
    OracleSum,
    OracleHold,
    /// raftlb's policy, but each node keeps at most this many requests in
    /// flight at a server and holds the rest, first come first served, until
    /// one of its requests is answered: HAProxy's per-server `maxconn` with
    /// its queue, the choice made late among the servers with room.
    RaftlbHold(u8),
    /// The same limit and queue with least connections (what HAProxy
    /// `leastconn` with `maxconn` does).
    LeastConnHold(u8),
    /// raftlb's policy with the limit and queue for costly requests only
    /// (estimated at `COSTLY_HOLD_MS` or more), and only while its node has
    /// few of them open (`COSTLY_HOLD_OPEN_PER_SERVER`): a costly request
    /// then waits at its node while each server has this many of the node's
    /// costly requests, and goes to the first with room (late binding).
    /// Cheap requests go at once, as without a queue, and so do costly ones
    /// while more are open (a closed loop's clients piling up).
    RaftlbHoldCostly(u8),
    /// raftlb's policy with a limit on each server's own count: every answer
    /// carries how many requests its server holds (computing or waiting for
    /// a place, from every node), as ORCA's per-request load reports do for
    /// Envoy, and a node sends a request only where that count, plus what it
    /// sent there since, is under the limit; else it holds the request until
    /// an answer says a server has room. Unlike `RaftlbHold`'s, the limit is
    /// the server's, whatever the number of nodes. A node with none of its
    /// requests out sends one anyway: it would hear from no server again.
    RaftlbShared(u8),
    /// The same for costly requests only (the count being the server's
    /// costly ones), bounded as `RaftlbHoldCostly` is.
    RaftlbSharedCostly(u8),
}

/// The estimated cost from which `Kind::RaftlbHoldCostly` holds a request:
/// between the workload's cheap class (at most 1 ms) and its costly one (10
/// ms or more).
pub const COSTLY_HOLD_MS: f64 = 5.0;

/// Whether a request of this estimated cost counts as costly for
/// `Kind::RaftlbHoldCostly`.
pub fn costly(cost_estimate_ms: f64) -> bool {
    cost_estimate_ms >= COSTLY_HOLD_MS
}
/// `Kind::RaftlbHoldCostly` holds a costly request only while its node has
/// at most this many costly requests open per server, this one included.
/// Without the bound a closed loop's p99 was 1.2-1.9x raftlb's: its 32
/// clients soon all wait on costly requests, and holding them only moves
/// the wait (Little's law). With 2 per server most of the open loop's gain
/// was gone (even machines 0.81 of the best reference, against 0.69).
pub const COSTLY_HOLD_OPEN_PER_SERVER: usize = 3;

impl Kind {
    pub const ALL: [Kind; 13] = [
        Kind::RoundRobin,
        Kind::LeastConn,
        Kind::P2c,
        Kind::Today,
        Kind::Raftlb,
        Kind::Oracle,
        Kind::OracleSum,
        Kind::OracleHold,
        Kind::RaftlbHold(1),
        Kind::RaftlbHold(2),
        Kind::LeastConnHold(1),
        Kind::LeastConnHold(2),
        Kind::RaftlbHoldCostly(1),
    ];

    /// The limits on the servers' own counts, an experiment left out of
    /// `ALL` (`BALANCE_SHARED=1` runs them): it did not pay.
    pub const SHARED: [Kind; 3] = [
        Kind::RaftlbShared(1),
        Kind::RaftlbShared(2),
        Kind::RaftlbSharedCostly(1),
    ];

    /// Whether the policy is shown the servers' true state (`Truth`).
    pub fn clairvoyant(self) -> bool {
        matches!(self, Kind::Oracle | Kind::OracleSum | Kind::OracleHold)
    }

    /// Whether the limit (`slots`) is on the count each server reports in
    /// its answers rather than on the node's own requests there.
    pub fn shared(self) -> bool {
        matches!(self, Kind::RaftlbShared(_) | Kind::RaftlbSharedCostly(_))
    }

    /// How many requests a node keeps in flight at one server (0: no limit).
    pub fn slots(self) -> usize {
        match self {
            Kind::RaftlbHold(k)
            | Kind::LeastConnHold(k)
            | Kind::RaftlbHoldCostly(k)
            | Kind::RaftlbShared(k)
            | Kind::RaftlbSharedCostly(k) => usize::from(k),
            _ => 0,
        }
    }

    /// Whether the limit of `slots` applies to a request of this estimated
    /// cost arriving while its node has `costly_open` costly requests open
    /// (it included) across `servers` servers. Always true for the other
    /// policies: with a limit it applies to every request, without one
    /// (`slots` 0) nothing is held.
    pub fn limits(self, cost_estimate_ms: f64, costly_open: usize, servers: usize) -> bool {
        match self {
            Kind::RaftlbHoldCostly(_) | Kind::RaftlbSharedCostly(_) => {
                costly(cost_estimate_ms) && costly_open <= COSTLY_HOLD_OPEN_PER_SERVER * servers
            }
            _ => true,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::RoundRobin => "roundrobin",
            Kind::LeastConn => "leastconn",
            Kind::P2c => "p2c(conn)",
            Kind::Today => "cpu+wait(old)",
            Kind::Raftlb => "raftlb",
            Kind::Oracle => "oracle",
            Kind::OracleSum => "oracle(sum)",
            Kind::OracleHold => "oracle(hold)",
            Kind::RaftlbHold(1) => "raftlb+queue1",
            Kind::RaftlbHold(2) => "raftlb+queue2",
            Kind::RaftlbHold(_) => "raftlb+queue",
            Kind::LeastConnHold(1) => "leastconn+q1",
            Kind::LeastConnHold(2) => "leastconn+q2",
            Kind::LeastConnHold(_) => "leastconn+q",
            Kind::RaftlbHoldCostly(1) => "raftlb+costly1",
            Kind::RaftlbHoldCostly(_) => "raftlb+costly",
            Kind::RaftlbShared(1) => "raftlb+srv1",
            Kind::RaftlbShared(2) => "raftlb+srv2",
            Kind::RaftlbShared(_) => "raftlb+srv",
            Kind::RaftlbSharedCostly(1) => "raftlb+srvc1",
            Kind::RaftlbSharedCostly(_) => "raftlb+srvc",
        }
    }

    pub fn make(self, node: usize, servers: usize, seed: u64, params: &Params) -> Box<dyn Policy> {
        let seed = seed ^ (node as u64 + 1).wrapping_mul(0x9E37_79B9);
        match self {
            Kind::RoundRobin => Box::new(RoundRobin {
                next: node % servers,
            }),
            Kind::LeastConn | Kind::LeastConnHold(_) => Box::new(LeastConn {
                conns: vec![0; servers],
                next: node % servers,
            }),
            Kind::P2c => Box::new(P2c {
                conns: vec![0; servers],
                rng: Rng::new(seed),
            }),
            Kind::Today => Box::new(Today {
                points: vec![0.0; servers],
                costs: BTreeMap::new(),
            }),
            Kind::Raftlb
            | Kind::RaftlbHold(_)
            | Kind::RaftlbHoldCostly(_)
            | Kind::RaftlbShared(_)
            | Kind::RaftlbSharedCostly(_) => Box::new(Raftlb {
                balancer: Balancer::new(params.clone(), seed),
                ids: (0..servers).map(|i| format!("s{i}")).collect(),
                tickets: BTreeMap::new(),
            }),
            Kind::Oracle => Box::new(Oracle { aim: Aim::Own }),
            Kind::OracleSum => Box::new(Oracle { aim: Aim::Total }),
            Kind::OracleHold => Box::new(Oracle { aim: Aim::Hold }),
        }
    }
}

struct RoundRobin {
    next: usize,
}

impl Policy for RoundRobin {
    fn choose(&mut self, views: &[View], _: f64, _: f64, _: Option<&Truth>) -> usize {
        let chosen = self.next % views.len();
        self.next = chosen + 1;
        chosen
    }
    fn started(&mut self, _: u64, _: usize, _: f64, _: f64) {}
    fn finished(&mut self, _: u64, _: usize, _: f64, _: f64) {}
}

/// HAProxy `leastconn` / nginx `least_conn`: fewest of this node's requests in
/// flight, ties in turn.
struct LeastConn {
    conns: Vec<u32>,
    next: usize,
}

impl Policy for LeastConn {
    fn choose(&mut self, _: &[View], _: f64, _: f64, _: Option<&Truth>) -> usize {
        let n = self.conns.len();
        let least = *self.conns.iter().min().expect("servers");
        let chosen = (0..n)
            .map(|k| (self.next + k) % n)
            .find(|&i| self.conns[i] == least)
            .expect("a least one");
        self.next = chosen + 1;
        chosen
    }
    fn started(&mut self, _: u64, server: usize, _: f64, _: f64) {
        self.conns[server] += 1;
    }
    fn finished(&mut self, _: u64, server: usize, _: f64, _: f64) {
        self.conns[server] -= 1;
    }
}

/// HAProxy `random(2)`: two servers at random, the one with fewer in flight.
struct P2c {
    conns: Vec<u32>,
    rng: Rng,
}

impl Policy for P2c {
    fn choose(&mut self, _: &[View], _: f64, _: f64, _: Option<&Truth>) -> usize {
        let n = self.conns.len() as u64;
        let a = self.rng.range(0, n) as usize;
        let b = (a + 1 + self.rng.range(0, n - 1) as usize) % n as usize;
        if self.conns[b] < self.conns[a] {
            b
        } else {
            a
        }
    }
    fn started(&mut self, _: u64, server: usize, _: f64, _: f64) {
        self.conns[server] += 1;
    }
    fn finished(&mut self, _: u64, server: usize, _: f64, _: f64) {
        self.conns[server] -= 1;
    }
}

/// raftlb before issue 13 (the node's `InFlight` choice, since replaced by
/// `server::choice`): lowest `cpu + wait` plus this node's in-flight points,
/// ties by id.
struct Today {
    points: Vec<f64>,
    costs: BTreeMap<u64, f64>,
}

fn in_flight_points(cost_ms: f64) -> f64 {
    10.0 * (1.0 + (1.0 + cost_ms).log10())
}

impl Policy for Today {
    fn choose(&mut self, views: &[View], _: f64, _: f64, _: Option<&Truth>) -> usize {
        (0..views.len())
            .min_by(|&a, &b| {
                let load = |i: usize| views[i].cpu + views[i].wait + self.points[i];
                load(a).total_cmp(&load(b))
            })
            .expect("servers")
    }
    fn started(&mut self, request: u64, server: usize, cost: f64, _: f64) {
        self.points[server] += in_flight_points(cost);
        self.costs.insert(request, cost);
    }
    fn finished(&mut self, request: u64, server: usize, _: f64, _: f64) {
        let cost = self.costs.remove(&request).expect("started");
        self.points[server] -= in_flight_points(cost);
    }
}

struct Raftlb {
    balancer: Balancer,
    ids: Vec<String>,
    tickets: BTreeMap<u64, Ticket>,
}

impl Raftlb {
    /// The servers in the policy's order for a request of `cost`.
    fn rank(&mut self, views: &[View], cost: f64, now_ms: f64) -> Vec<usize> {
        let candidates: Vec<Candidate> = views
            .iter()
            .zip(&self.ids)
            .map(|(v, id)| Candidate {
                id,
                alive: true,
                cpu: v.cpu,
                wait: v.wait,
                report_age_ms: now_ms - v.applied_at_ms,
            })
            .collect();
        self.balancer.rank(&candidates, cost, now_ms)
    }
}

impl Policy for Raftlb {
    fn choose(&mut self, views: &[View], cost: f64, now_ms: f64, _: Option<&Truth>) -> usize {
        self.rank(views, cost, now_ms)[0]
    }
    fn choose_free(
        &mut self,
        views: &[View],
        cost: f64,
        now_ms: f64,
        _: Option<&Truth>,
        free: &[bool],
    ) -> usize {
        (self.rank(views, cost, now_ms).into_iter())
            .find(|&s| free[s])
            .expect("a free server")
    }
    fn started(&mut self, request: u64, server: usize, cost: f64, _: f64) {
        let ticket = self.balancer.started(&self.ids[server], cost);
        self.tickets.insert(request, ticket);
    }
    fn finished(&mut self, request: u64, _: usize, service_ms: f64, now_ms: f64) {
        let ticket = self.tickets.remove(&request).expect("started");
        self.balancer.finished(ticket, service_ms, true, now_ms);
    }
}

/// Clairvoyant and not deployable: shown every server's true capacity,
/// neighbour and the exact remaining work of every job (every node's), it
/// plays each server forward under its model and sends the request by its
/// `Aim`. Greedy for the request at hand: blind to the requests to come. It
/// shows how far choosing a server alone can go.
struct Oracle {
    aim: Aim,
}

enum Aim {
    /// Where the request itself would finish first (`oracle`).
    Own,
    /// Where it costs all requests least: its own time plus the delay it adds
    /// to the jobs already there (`oracle(sum)`).
    Total,
    /// As `Total` for a costly request, but a cheap one where it would finish
    /// last (`oracle(hold)`): a closed loop's mean latency is fixed (Little's
    /// law), so holding cheap requests in a queue leaves fewer clients in
    /// costly ones at once, and those share the CPU with fewer. It tests
    /// whether the closed loop's p99 can be bought with the cheap requests'.
    Hold,
}

impl Policy for Oracle {
    fn choose(&mut self, _: &[View], _: f64, _: f64, truth: Option<&Truth>) -> usize {
        let truth = truth.expect("the oracle is shown the truth");
        (0..truth.servers())
            .map(|s| {
                let cost = match self.aim {
                    Aim::Own => truth.finish_ms(s),
                    Aim::Total => truth.total_delay_ms(s),
                    Aim::Hold if truth.costly() => truth.total_delay_ms(s),
                    Aim::Hold => -truth.finish_ms(s),
                };
                (cost, s)
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .expect("servers")
            .1
    }
    fn started(&mut self, _: u64, _: usize, _: f64, _: f64) {}
    fn finished(&mut self, _: u64, _: usize, _: f64, _: f64) {}
}
