//! A deterministic balancing simulator: servers as machines whose capacity
//! changes over time, balancer nodes each with its own copy of the agreed load
//! table (reports every interval, delivered late) and its own in-flight counts,
//! and the same seeded arrivals replayed under each policy.
//!
//! The model:
//! - A server is a machine with a CPU quota (`capacity`, in cores) and a
//!   worker that computes at most `threads` requests at once (one thread per
//!   request, as `raftlb-worker`); the rest wait, first come first served, not
//!   runnable. The running threads and a neighbour's busy threads (`hog`) share
//!   the quota equally (CFS within one cgroup), each at most one core:
//!   processor sharing.
//! - A daemon on each server reports every `report_interval_ms` what it saw
//!   over the interval: `cpu`, the CPU used (worker and neighbour) in percent
//!   of one core, so a throttled machine reports little; `wait`, the share of
//!   its threads' runnable time spent not running. The report reaches each
//!   node after a commit delay (up to `report_delay_ms`).
//! - A request costs `work_ms` of one core; the node knows an estimate from
//!   N. It reaches the server, and its answer the node, after `NETWORK_MS`.
//! - Open loop: Poisson arrivals at a fraction of the scenario's capacity.
//!   Closed loop: clients that send their next request as soon as the last
//!   is answered. Five doors: arrivals spread over five nodes at random.
//! - With a limit (`Kind::slots`), a node keeps at most that many of its
//!   requests in flight at one server and holds the rest in arrival order;
//!   each answer lets the oldest held request go to a server with room. A
//!   limit may apply to the costly requests only (`Kind::limits`): the cheap
//!   ones then go at once and do not count.
//! - The policies see the agreed table and their own requests; only the
//!   clairvoyant ones are also shown the servers' true state (`Truth`),
//!   which they play forward under this model (`Server::play`).
//!
//! Everything runs from one seed and no clock, so a run replays exactly.

#![allow(dead_code)] // the bench and the test use different parts

pub mod policies;
pub mod scenarios;
pub mod workload;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use raftlb::balance::Params;
use raftlb::raft::Rng;

use policies::{Kind, Policy, View};
use workload::Request;

/// One way between a node and a server, in ms.
const NETWORK_MS: f64 = 0.1;

/// A server's machine at the start, and later by `Change`s.
#[derive(Clone, Copy, Debug)]
pub struct Machine {
    /// CPU quota in cores.
    pub capacity: f64,
    /// A neighbour's busy threads in the same cgroup.
    pub hog: f64,
}

#[derive(Clone, Debug)]
pub struct Change {
    pub at_ms: f64,
    pub server: usize,
    pub machine: Machine,
}

#[derive(Clone, Copy, Debug)]
pub enum Load {
    Closed {
        clients: usize,
    },
    /// Poisson arrivals at this fraction of `Scenario::capacity_cores`.
    Open {
        utilization: f64,
    },
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub machines: Vec<Machine>,
    pub changes: Vec<Change>,
    /// What the open loop's rate is a fraction of: the cores left to the
    /// workers, averaged over the run.
    pub capacity_cores: f64,
    pub nodes: usize,
    pub threads: usize,
    pub report_interval_ms: f64,
    /// CFS bandwidth control (None: a quota spent evenly, as a slower CPU).
    pub bandwidth: Option<Bandwidth>,
    pub report_delay_ms: f64,
    pub duration_ms: f64,
    /// Requests arriving before this are not counted.
    pub warmup_ms: f64,
    pub load: Load,
}

/// What one run of one policy measured.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Latencies (ms) of the requests that arrived after the warmup; those
    /// still unanswered at the end count with their age then.
    pub latencies_ms: Vec<f64>,
    /// Whether each of `latencies_ms` is of a costly request (the workload's
    /// expensive class).
    pub costly: Vec<bool>,
    pub answered: u64,
    pub seconds: f64,
    /// Requests sent to each server.
    pub sent: Vec<u64>,
    /// Costly requests sent to each server.
    pub sent_costly: Vec<u64>,
    /// (arrival ms, server) of every counted request, for shares over time.
    pub choices: Vec<(f64, usize)>,
    /// The most requests one node had in flight at one server at once.
    pub most_in_flight: usize,
    /// The same, of the requests a limit applies to (`Kind::limits`).
    pub most_limited: usize,
    /// Requests still held at their node at the end, never sent.
    pub held_at_end: usize,
}

impl Outcome {
    pub fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.latencies_ms.clone();
        sorted.sort_by(f64::total_cmp);
        percentile_of_sorted(&sorted, p)
    }

    pub fn throughput(&self) -> f64 {
        self.answered as f64 / self.seconds
    }

    pub fn mean_ms(&self) -> f64 {
        self.latencies_ms.iter().sum::<f64>() / self.latencies_ms.len().max(1) as f64
    }

    /// Little's law's L = X x W: the mean number of requests in the system
    /// (from arrival at a node to the answer there). A closed loop without
    /// think time always holds one request per client, so this is the client
    /// count, less the edges of the counted window.
    pub fn in_system(&self) -> f64 {
        self.throughput() * self.mean_ms() / 1000.0
    }

    /// The latencies of one class, sorted.
    pub fn class_sorted(&self, costly: bool) -> Vec<f64> {
        let mut sorted: Vec<f64> = self
            .latencies_ms
            .iter()
            .zip(&self.costly)
            .filter(|(_, &c)| c == costly)
            .map(|(&l, _)| l)
            .collect();
        sorted.sort_by(f64::total_cmp);
        sorted
    }

    /// The share of all the latency (the closed loop's fixed budget) that the
    /// costly requests take, in 0..1.
    pub fn costly_share(&self) -> f64 {
        let costly: f64 = self
            .latencies_ms
            .iter()
            .zip(&self.costly)
            .filter(|(_, &c)| c)
            .map(|(&l, _)| l)
            .sum();
        costly / self.latencies_ms.iter().sum::<f64>().max(f64::MIN_POSITIVE)
    }

    /// Adds another seed's run of the same scenario and policy.
    pub fn merge(&mut self, other: Outcome) {
        self.latencies_ms.extend(other.latencies_ms);
        self.costly.extend(other.costly);
        self.answered += other.answered;
        self.seconds += other.seconds;
        for (a, b) in self.sent_costly.iter_mut().zip(other.sent_costly) {
            *a += b;
        }
        for (a, b) in self.sent.iter_mut().zip(other.sent) {
            *a += b;
        }
        self.choices.extend(other.choices);
        self.most_in_flight = self.most_in_flight.max(other.most_in_flight);
        self.most_limited = self.most_limited.max(other.most_limited);
        self.held_at_end += other.held_at_end;
    }
}

pub fn percentile_of_sorted(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Job {
    request: usize,
    remaining_ms: f64,
}

/// A server played forward (`Server::play`).
struct Played {
    new_done_ms: f64,
    others_done_sum_ms: f64,
}

struct Server {
    machine: Machine,
    threads: usize,
    running: Vec<Job>,
    waiting: VecDeque<Job>,
    /// Requests sent here and still on the network: (arrival ms, request,
    /// work ms), in the order they arrive. Only the clairvoyant policy reads
    /// it.
    incoming: VecDeque<(f64, usize, f64)>,
    /// Since the last report: core-ms used, thread-ms runnable, thread-ms
    /// runnable but not running.
    used: f64,
    runnable: f64,
    not_running: f64,
    /// CFS bandwidth control, when modelled: the quota is spent at up to
    /// `Bandwidth::burst` times the capacity, then the machine stalls until
    /// its period ends.
    bandwidth: Option<Bandwidth>,
    quota_left_ms: f64,
    period_end_ms: f64,
}

/// A cgroup's quota as CFS enforces it: `capacity x period_ms` core-ms per
/// period, spent as fast as `burst x capacity` cores allow.
#[derive(Clone, Copy, Debug)]
pub struct Bandwidth {
    pub period_ms: f64,
    pub burst: f64,
}

impl Server {
    /// An idle server; under `bandwidth`, its first period ends at
    /// `first_period_end_ms` with that part of a period's quota to spend.
    fn new(
        machine: Machine,
        threads: usize,
        bandwidth: Option<Bandwidth>,
        first_period_end_ms: f64,
    ) -> Server {
        let quota_left_ms = match bandwidth {
            Some(_) => machine.capacity * first_period_end_ms,
            None => 0.0,
        };
        Server {
            machine,
            threads,
            running: Vec::new(),
            waiting: VecDeque::new(),
            incoming: VecDeque::new(),
            used: 0.0,
            runnable: 0.0,
            not_running: 0.0,
            bandwidth,
            quota_left_ms,
            period_end_ms: first_period_end_ms,
        }
    }

    /// Cores each runnable thread gets.
    fn rate(&self) -> f64 {
        let threads = self.running.len() as f64 + self.machine.hog;
        if threads == 0.0 {
            return 0.0;
        }
        match self.bandwidth {
            None => (self.machine.capacity / threads).min(1.0),
            Some(_) if self.quota_left_ms <= 0.0 => 0.0,
            Some(b) => (b.burst * self.machine.capacity / threads).min(1.0),
        }
    }

    fn advance(&mut self, dt: f64) {
        let rate = self.rate();
        for job in &mut self.running {
            job.remaining_ms -= rate * dt;
        }
        let threads = self.running.len() as f64 + self.machine.hog;
        self.used += rate * threads * dt;
        self.runnable += threads * dt;
        self.not_running += threads * (1.0 - rate) * dt;
        if self.bandwidth.is_some() {
            self.quota_left_ms -= rate * threads * dt;
            if self.quota_left_ms < 1e-9 {
                self.quota_left_ms = 0.0;
            }
        }
    }

    /// When the quota runs out or the period ends, whichever is first.
    fn next_throttle_change(&self, now: f64) -> f64 {
        if self.bandwidth.is_none() {
            return f64::INFINITY;
        }
        let burn = self.rate() * (self.running.len() as f64 + self.machine.hog);
        let out = if burn > 0.0 && self.quota_left_ms > 0.0 {
            now + self.quota_left_ms / burn
        } else {
            f64::INFINITY
        };
        out.min(self.period_end_ms)
    }

    /// A new period's quota, when the period ended by `now`.
    fn refill(&mut self, now: f64) {
        if let Some(b) = self.bandwidth {
            while self.period_end_ms <= now + 1e-9 {
                self.quota_left_ms = self.machine.capacity * b.period_ms;
                self.period_end_ms += b.period_ms;
            }
        }
    }

    fn next_completion(&self, now: f64) -> f64 {
        let rate = self.rate();
        self.running
            .iter()
            .map(|j| now + j.remaining_ms.max(0.0) / rate)
            .fold(f64::INFINITY, f64::min)
    }

    fn admit(&mut self, job: Job) {
        if self.running.len() < self.threads {
            self.running.push(job);
        } else {
            self.waiting.push_back(job);
        }
    }

    /// Removes the jobs done; returns their requests.
    fn complete(&mut self) -> Vec<usize> {
        let mut done = Vec::new();
        self.running.retain(|j| {
            let finished = j.remaining_ms <= 1e-9;
            if finished {
                done.push(j.request);
            }
            !finished
        });
        while self.running.len() < self.threads {
            let Some(job) = self.waiting.pop_front() else {
                break;
            };
            self.running.push(job);
        }
        done
    }

    /// Plays this server forward from `now` under its model (threads, FIFO
    /// queue, processor sharing with the neighbour) with the jobs running,
    /// waiting and on their way, the machine's `changes` to come (time order)
    /// and perhaps a new job (arrival ms, work ms), as if no other request
    /// came. Returns when the new job is done and the sum of the others'
    /// completion times; with `until_new`, stops when the new job is done (the
    /// sum is then partial). What the clairvoyant policies compare.
    fn play(
        &self,
        now: f64,
        new: Option<(f64, f64)>,
        changes: &[&Change],
        until_new: bool,
    ) -> Played {
        // (remaining ms, is the new job)
        let mut running: Vec<(f64, bool)> = self
            .running
            .iter()
            .map(|j| (j.remaining_ms, false))
            .collect();
        let mut waiting: VecDeque<(f64, bool)> = self
            .waiting
            .iter()
            .map(|j| (j.remaining_ms, false))
            .collect();
        let mut arrivals: VecDeque<(f64, f64, bool)> = self
            .incoming
            .iter()
            .map(|&(t, _, w)| (t, w, false))
            .collect();
        // Sent last, it arrives after those sent before at the same time.
        if let Some((arrive_ms, work_ms)) = new {
            arrivals.push_back((arrive_ms, work_ms, true));
        }
        let mut played = Played {
            new_done_ms: f64::INFINITY,
            others_done_sum_ms: 0.0,
        };
        let mut machine = self.machine;
        let mut changes = changes.iter().peekable();
        let mut t = now;
        while !(running.is_empty() && arrivals.is_empty()) {
            let threads = running.len() as f64 + machine.hog;
            let rate = if threads == 0.0 {
                0.0
            } else {
                (machine.capacity / threads).min(1.0)
            };
            let done_at = running
                .iter()
                .map(|&(r, _)| t + r.max(0.0) / rate)
                .fold(f64::INFINITY, f64::min);
            let arrive_at = arrivals.front().map_or(f64::INFINITY, |a| a.0);
            let change_at = changes.peek().map_or(f64::INFINITY, |c| c.at_ms);
            let next = done_at.min(arrive_at).min(change_at);
            for job in &mut running {
                job.0 -= rate * (next - t);
            }
            t = next;
            if done_at <= next {
                running.retain(|&(r, new)| {
                    let finished = r < 1e-7;
                    if finished && new {
                        played.new_done_ms = t;
                    } else if finished {
                        played.others_done_sum_ms += t;
                    }
                    !finished
                });
                if until_new && played.new_done_ms.is_finite() {
                    break;
                }
            } else if arrive_at <= next {
                let (_, w, new) = arrivals.pop_front().expect("peeked");
                waiting.push_back((w, new));
            } else {
                machine = changes.next().expect("peeked").machine;
            }
            while running.len() < self.threads {
                let Some(job) = waiting.pop_front() else {
                    break;
                };
                running.push(job);
            }
        }
        played
    }

    /// The daemon's report over the last `interval_ms`: (cpu, wait).
    fn report(&mut self, interval_ms: f64) -> (f64, f64) {
        let cpu = (100.0 * self.used / interval_ms).min(100.0);
        let wait = if self.runnable > 0.0 {
            100.0 * self.not_running / self.runnable
        } else {
            0.0
        };
        self.used = 0.0;
        self.runnable = 0.0;
        self.not_running = 0.0;
        (cpu, wait)
    }
}

/// What the clairvoyant policy is shown when it chooses: every server's true
/// machine, its jobs' exact remaining work (every node's), the machines'
/// changes to come, and the request's true work. The other policies are
/// given none of it.
pub struct Truth<'a> {
    servers: &'a [Server],
    changes: &'a [Change],
    now_ms: f64,
    work_ms: f64,
    costly: bool,
}

impl Truth<'_> {
    /// When the request would be done at `server` if sent there now, were no
    /// other request sent after it (its answer's way back is the same
    /// everywhere, so left out).
    pub fn finish_ms(&self, server: usize) -> f64 {
        let new = Some((self.now_ms + NETWORK_MS, self.work_ms));
        self.servers[server]
            .play(self.now_ms, new, &self.changes_of(server), true)
            .new_done_ms
    }

    /// What sending the request to `server` costs all requests, in ms: its own
    /// time to completion plus the delay it adds to every job already there or
    /// on its way (processor sharing slows them all; a queue it joins first
    /// holds them back), were no other request sent after it.
    pub fn total_delay_ms(&self, server: usize) -> f64 {
        let changes = self.changes_of(server);
        let s = &self.servers[server];
        let new = Some((self.now_ms + NETWORK_MS, self.work_ms));
        let with = s.play(self.now_ms, new, &changes, false);
        let without = s.play(self.now_ms, None, &changes, false);
        with.new_done_ms - self.now_ms + with.others_done_sum_ms - without.others_done_sum_ms
    }

    fn changes_of(&self, server: usize) -> Vec<&Change> {
        let mut changes: Vec<&Change> = self
            .changes
            .iter()
            .filter(|c| c.server == server && c.at_ms > self.now_ms)
            .collect();
        changes.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
        changes
    }

    /// Whether the request is of the workload's costly class.
    pub fn costly(&self) -> bool {
        self.costly
    }

    pub fn servers(&self) -> usize {
        self.servers.len()
    }
}

enum Event {
    /// A request arrives at its node.
    Arrive(usize),
    /// A request reaches its server.
    AtServer(usize),
    /// A request's answer reaches its node.
    Answer(usize),
    /// A server's daemon samples and sends its report.
    Report(usize),
    /// A report is applied on one node: (node, server, cpu, wait).
    Apply(usize, usize, f64, f64),
    Change(usize),
}

struct InFlight {
    request: Request,
    arrived_ms: f64,
    sent_ms: f64,
    server: usize,
    /// The closed-loop client that sent it.
    client: Option<usize>,
    /// Whether its node's limit applies to it (decided when it arrives).
    limited: bool,
    /// The count of limited requests its server held when it answered it
    /// (`Kind::shared`).
    told: usize,
}

/// The state of one run.
struct Sim<'a> {
    scenario: &'a Scenario,
    now: f64,
    events: BinaryHeap<Reverse<(u64, u64, usize)>>,
    payloads: Vec<Option<Event>>,
    servers: Vec<Server>,
    views: Vec<Vec<View>>,
    policies: Vec<Box<dyn Policy>>,
    /// Whether the policies are shown the `Truth`.
    clairvoyant: bool,
    /// Requests each node keeps in flight at one server at most, the rest
    /// held at the node in arrival order (`Kind::slots`; 0: no limit).
    slots: usize,
    /// The policy, for which requests its limit applies to.
    kind: Kind,
    requests: Vec<InFlight>,
    done: Vec<bool>,
    clients: Vec<workload::Client>,
    rng: Rng,
    outcome: Outcome,
    /// Per node: requests held for a slot (with `slots`), its requests in
    /// flight at each server, of those the ones the limit applies to, and its
    /// costly requests not yet answered (held or in flight).
    held: Vec<VecDeque<usize>>,
    in_flight: Vec<Vec<usize>>,
    limited: Vec<Vec<usize>>,
    costly_open: Vec<usize>,
    /// Per node and server (`Kind::shared`): the count of limited requests
    /// the server's last answer to the node told, and the node's limited
    /// requests sent there since.
    told: Vec<Vec<(usize, usize)>>,
}

/// Runs `scenario` under `kind` with the arrivals of `seed`.
pub fn run(scenario: &Scenario, kind: Kind, seed: u64, params: &Params) -> Outcome {
    let servers = scenario.machines.len();
    let mut sim = Sim {
        scenario,
        now: 0.0,
        events: BinaryHeap::new(),
        payloads: Vec::new(),
        servers: (scenario.machines.iter().enumerate())
            .map(|(i, &machine)| {
                // Each cgroup's period starts at its own time, as CFS's
                // timers do.
                let first_period_end_ms = scenario.bandwidth.map_or(0.0, |b| {
                    b.period_ms * (i as f64 + 1.0) / (servers as f64 + 1.0)
                });
                Server::new(
                    machine,
                    scenario.threads,
                    scenario.bandwidth,
                    first_period_end_ms,
                )
            })
            .collect(),
        views: vec![vec![View::default(); servers]; scenario.nodes],
        policies: (0..scenario.nodes)
            .map(|node| kind.make(node, servers, seed, params))
            .collect(),
        clairvoyant: kind.clairvoyant(),
        slots: kind.slots(),
        kind,
        requests: Vec::new(),
        done: Vec::new(),
        clients: Vec::new(),
        rng: Rng::new(seed ^ 0x5eed),
        outcome: Outcome {
            latencies_ms: Vec::new(),
            costly: Vec::new(),
            answered: 0,
            seconds: (scenario.duration_ms - scenario.warmup_ms) / 1000.0,
            sent: vec![0; servers],
            sent_costly: vec![0; servers],
            choices: Vec::new(),
            most_in_flight: 0,
            most_limited: 0,
            held_at_end: 0,
        },
        held: vec![VecDeque::new(); scenario.nodes],
        in_flight: vec![vec![0; servers]; scenario.nodes],
        limited: vec![vec![0; servers]; scenario.nodes],
        costly_open: vec![0; scenario.nodes],
        told: vec![vec![(0, 0); servers]; scenario.nodes],
    };
    sim.schedule_start(seed);
    sim.run_to_end();
    sim.outcome
}

impl Sim<'_> {
    fn at(&mut self, t: f64, event: Event) {
        let seq = self.payloads.len();
        self.payloads.push(Some(event));
        // Non-negative f64s order as their bits do.
        self.events
            .push(Reverse((t.max(0.0).to_bits(), seq as u64, seq)));
    }

    fn schedule_start(&mut self, seed: u64) {
        let s = self.scenario;
        let servers = s.machines.len();
        match s.load {
            Load::Open { utilization } => {
                let rate_per_ms = utilization * s.capacity_cores / workload::mean_work_ms();
                for (t, request) in
                    workload::open_arrivals(seed, rate_per_ms, s.duration_ms, s.nodes)
                {
                    let id = self.new_request(request, t, None);
                    self.at(t, Event::Arrive(id));
                }
            }
            Load::Closed { clients } => {
                for c in 0..clients {
                    self.clients.push(workload::Client::new(seed, c, s.nodes));
                    self.client_sends(c, c as f64 * 0.01);
                }
            }
        }
        for server in 0..servers {
            let phase = workload::uniform(&mut self.rng) * s.report_interval_ms;
            self.at(phase, Event::Report(server));
        }
        for (i, change) in s.changes.iter().enumerate() {
            self.at(change.at_ms, Event::Change(i));
        }
    }

    fn new_request(&mut self, request: Request, t: f64, client: Option<usize>) -> usize {
        self.requests.push(InFlight {
            request,
            arrived_ms: t,
            sent_ms: t,
            server: 0,
            client,
            limited: false,
            told: 0,
        });
        self.done.push(false);
        self.requests.len() - 1
    }

    fn client_sends(&mut self, client: usize, t: f64) {
        let request = self.clients[client].next();
        let id = self.new_request(request, t, Some(client));
        self.at(t, Event::Arrive(id));
    }

    fn run_to_end(&mut self) {
        let end = self.scenario.duration_ms;
        loop {
            let next_event = self
                .events
                .peek()
                .map_or(f64::INFINITY, |Reverse((bits, _, _))| f64::from_bits(*bits));
            let (next_done, server) = self
                .servers
                .iter()
                .enumerate()
                .map(|(i, s)| (s.next_completion(self.now), i))
                .fold((f64::INFINITY, 0), |a, b| if b.0 < a.0 { b } else { a });
            let next_throttle = (self.servers.iter())
                .map(|s| s.next_throttle_change(self.now))
                .fold(f64::INFINITY, f64::min);
            let t = next_event.min(next_done).min(next_throttle);
            if t > end {
                break;
            }
            for s in &mut self.servers {
                s.advance(t - self.now);
                s.refill(t);
            }
            self.now = t;
            if next_throttle < next_event.min(next_done) {
                continue;
            }
            if next_done <= next_event {
                self.complete(server);
            } else {
                let Reverse((_, _, slot)) = self.events.pop().expect("peeked");
                let event = self.payloads[slot].take().expect("each event once");
                self.handle(event);
            }
        }
        self.count_unanswered(end);
        self.outcome.held_at_end = self.held.iter().map(VecDeque::len).sum();
    }

    fn complete(&mut self, server: usize) {
        let servers = &mut self.servers[server];
        // Jobs whose remaining work rounds to zero now.
        for job in &mut servers.running {
            if job.remaining_ms < 1e-7 {
                job.remaining_ms = 0.0;
            }
        }
        let done = servers.complete();
        if self.kind.shared() {
            let servers = &self.servers[server];
            let there = (servers.running.iter().map(|j| j.request))
                .chain(servers.waiting.iter().map(|j| j.request))
                .filter(|&r| self.requests[r].limited)
                .count();
            for &request in &done {
                self.requests[request].told = there;
            }
        }
        for request in done {
            self.at(self.now + NETWORK_MS, Event::Answer(request));
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Arrive(id) => {
                let request = self.requests[id].request;
                if policies::costly(request.cost_estimate_ms) {
                    self.costly_open[request.node] += 1;
                }
                self.requests[id].limited = self.slots > 0
                    && self.kind.limits(
                        request.cost_estimate_ms,
                        self.costly_open[request.node],
                        self.servers.len(),
                    );
                self.dispatch(id);
            }
            Event::AtServer(id) => {
                let work = self.requests[id].request.work_ms;
                let server = self.requests[id].server;
                let incoming = &mut self.servers[server].incoming;
                let at = incoming
                    .iter()
                    .position(|&(_, r, _)| r == id)
                    .expect("sent before it arrives");
                incoming.remove(at);
                self.servers[server].admit(Job {
                    request: id,
                    remaining_ms: work,
                });
            }
            Event::Answer(id) => self.answer(id),
            Event::Report(server) => {
                let interval = self.scenario.report_interval_ms;
                let (cpu, wait) = self.servers[server].report(interval);
                // One commit delay for the report, a little more on each node.
                let commit =
                    self.now + self.scenario.report_delay_ms * workload::uniform(&mut self.rng);
                for node in 0..self.scenario.nodes {
                    let apply = commit + 5.0 * workload::uniform(&mut self.rng);
                    self.at(apply, Event::Apply(node, server, cpu, wait));
                }
                self.at(self.now + interval, Event::Report(server));
            }
            Event::Apply(node, server, cpu, wait) => {
                self.views[node][server] = View {
                    cpu,
                    wait,
                    applied_at_ms: self.now,
                };
            }
            Event::Change(i) => {
                let change = &self.scenario.changes[i];
                self.servers[change.server].machine = change.machine;
            }
        }
    }

    fn dispatch(&mut self, id: usize) {
        let now = self.now;
        let request = self.requests[id].request;
        let node = request.node;
        let truth = self.clairvoyant.then(|| Truth {
            servers: &self.servers,
            changes: &self.scenario.changes,
            now_ms: now,
            work_ms: request.work_ms,
            costly: request.costly,
        });
        let limited = self.requests[id].limited;
        let slots = if limited { self.slots } else { 0 };
        let free = if slots == 0 {
            Vec::new()
        } else {
            self.room(node)
        };
        let policy = &mut self.policies[node];
        let server = if slots == 0 {
            policy.choose(
                &self.views[node],
                request.cost_estimate_ms,
                now,
                truth.as_ref(),
            )
        } else {
            if !free.iter().any(|&f| f) {
                self.held[node].push_back(id);
                return;
            }
            policy.choose_free(
                &self.views[node],
                request.cost_estimate_ms,
                now,
                truth.as_ref(),
                &free,
            )
        };
        self.in_flight[node][server] += 1;
        self.outcome.most_in_flight = self
            .outcome
            .most_in_flight
            .max(self.in_flight[node][server]);
        if limited {
            self.told[node][server].1 += 1;
            self.limited[node][server] += 1;
            self.outcome.most_limited = self.outcome.most_limited.max(self.limited[node][server]);
        }
        policy.started(id as u64, server, request.cost_estimate_ms, now);
        self.servers[server]
            .incoming
            .push_back((now + NETWORK_MS, id, request.work_ms));
        let r = &mut self.requests[id];
        r.server = server;
        r.sent_ms = now;
        if r.arrived_ms >= self.scenario.warmup_ms {
            self.outcome.sent[server] += 1;
            if request.costly {
                self.outcome.sent_costly[server] += 1;
            }
            self.outcome.choices.push((r.arrived_ms, server));
        }
        self.at(now + NETWORK_MS, Event::AtServer(id));
    }

    /// Which servers have room for one more of `node`'s limited requests.
    fn room(&self, node: usize) -> Vec<bool> {
        if self.kind.shared() {
            // A node with none of its limited requests out would hear from
            // no server about them again: it sends one anyway.
            let idle = self.limited[node].iter().all(|&n| n == 0);
            (self.told[node].iter())
                .map(|&(told, since)| idle || told + since < self.slots)
                .collect()
        } else {
            (self.limited[node].iter())
                .map(|&n| n < self.slots)
                .collect()
        }
    }

    fn answer(&mut self, id: usize) {
        let now = self.now;
        self.done[id] = true;
        let r = &self.requests[id];
        let (node, server, client) = (r.request.node, r.server, r.client);
        self.policies[node].finished(id as u64, server, now - r.sent_ms, now);
        self.in_flight[node][server] -= 1;
        if policies::costly(r.request.cost_estimate_ms) {
            self.costly_open[node] -= 1;
        }
        let limited = r.limited;
        if limited {
            self.limited[node][server] -= 1;
        }
        if r.arrived_ms >= self.scenario.warmup_ms {
            self.outcome.latencies_ms.push(now - r.arrived_ms);
            self.outcome.costly.push(r.request.costly);
        }
        if now >= self.scenario.warmup_ms {
            self.outcome.answered += 1;
        }
        if let Some(c) = client {
            self.client_sends(c, now);
        }
        if self.kind.shared() {
            // Every answer says how many the server holds: the held requests
            // go while some server has room.
            self.told[node][server] = (self.requests[id].told, 0);
            while !self.held[node].is_empty() && self.room(node).iter().any(|&f| f) {
                let held = self.held[node].pop_front().expect("not empty");
                self.dispatch(held);
            }
        } else if limited {
            // Only an answer of the limited class frees a place for a held one.
            if let Some(held) = self.held[node].pop_front() {
                self.dispatch(held);
            }
        }
    }

    /// Requests still unanswered at the end count with their age: a policy
    /// that left a queue growing is not rewarded for it.
    fn count_unanswered(&mut self, end: f64) {
        for (r, done) in self.requests.iter().zip(&self.done) {
            if !done && r.arrived_ms >= self.scenario.warmup_ms && r.arrived_ms <= end {
                self.outcome.latencies_ms.push(end - r.arrived_ms);
                self.outcome.costly.push(r.request.costly);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a server with its own methods (as `Sim::run_to_end` does) until
    /// every job is done: each arrival (ms, request, work) and change on time.
    /// Returns each request's completion time.
    fn drive(
        mut server: Server,
        mut arrivals: VecDeque<(f64, usize, f64)>,
        changes: &[&Change],
    ) -> Vec<(usize, f64)> {
        let mut changes = changes.iter().peekable();
        let mut now = 0.0;
        let mut done = Vec::new();
        while !(server.running.is_empty() && server.waiting.is_empty() && arrivals.is_empty()) {
            let next_done = server.next_completion(now);
            let next_arrival = arrivals.front().map_or(f64::INFINITY, |a| a.0);
            let next_change = changes.peek().map_or(f64::INFINITY, |c| c.at_ms);
            let next_throttle = server.next_throttle_change(now);
            let t = next_done
                .min(next_arrival)
                .min(next_change)
                .min(next_throttle);
            server.advance(t - now);
            server.refill(t);
            now = t;
            if next_throttle < next_done.min(next_arrival).min(next_change) {
                continue;
            }
            if next_done <= t {
                for job in &mut server.running {
                    if job.remaining_ms < 1e-7 {
                        job.remaining_ms = 0.0;
                    }
                }
                done.extend(server.complete().into_iter().map(|r| (r, now)));
            } else if next_arrival <= t {
                let (_, request, remaining_ms) = arrivals.pop_front().expect("peeked");
                server.admit(Job {
                    request,
                    remaining_ms,
                });
            } else {
                server.machine = changes.next().expect("peeked").machine;
            }
        }
        done
    }

    #[test]
    fn a_quota_under_bandwidth_control_is_spent_in_a_burst_then_the_machine_stalls() {
        // Two 40 ms jobs, a quota of one core (40 ms per 40 ms period) spent
        // at up to 2.5 cores: each runs on a core of its own for 20 ms, the
        // quota is gone, the machine stalls until the period ends at 40 ms,
        // and both finish 20 ms into the next period. Spent evenly, as a
        // slower CPU, they share one core and finish at 80 ms.
        let machine = Machine {
            capacity: 1.0,
            hog: 0.0,
        };
        let server = |bandwidth| Server::new(machine, 4, bandwidth, 40.0);
        let arrivals = VecDeque::from([(0.0, 0, 40.0), (0.0, 1, 40.0)]);
        let cfs = Bandwidth {
            period_ms: 40.0,
            burst: 2.5,
        };
        for (bandwidth, at) in [(Some(cfs), 60.0), (None, 80.0)] {
            let done = drive(server(bandwidth), arrivals.clone(), &[]);
            assert_eq!(done.len(), 2);
            for (_, t) in done {
                assert!(
                    (t - at).abs() < 1e-6,
                    "{bandwidth:?}: done at {t}, not {at}"
                );
            }
        }
    }

    fn busy_server() -> Server {
        let job = |request, remaining_ms| Job {
            request,
            remaining_ms,
        };
        let machine = Machine {
            capacity: 0.5,
            hog: 1.0,
        };
        Server {
            running: vec![job(0, 5.0), job(1, 1.0)],
            waiting: VecDeque::from([job(2, 3.0), job(3, 0.5)]),
            incoming: VecDeque::from([(0.1, 4, 2.0)]),
            ..Server::new(machine, 2, None, 0.0)
        }
    }

    #[test]
    fn the_oracles_look_ahead_is_what_the_server_then_does() {
        // Threads, a FIFO queue, a neighbour, a job on its way, and the
        // neighbour leaving midway: the clairvoyant policies' forecast must be
        // the simulator's own outcome, or their bound means nothing.
        let change = Change {
            at_ms: 6.0,
            server: 0,
            machine: Machine {
                capacity: 1.0,
                hog: 0.0,
            },
        };
        let server = busy_server();
        let new = (0.1, 4.0);
        let played = server.play(0.0, Some(new), &[&change], false);
        let mut arrivals = server.incoming.clone();
        arrivals.push_back((new.0, 99, new.1));
        let done = drive(busy_server(), arrivals, &[&change]);
        let new_done = done.iter().find(|d| d.0 == 99).expect("the new job done").1;
        let others: f64 = done.iter().filter(|d| d.0 != 99).map(|d| d.1).sum();
        assert!(
            (played.new_done_ms - new_done).abs() < 1e-6,
            "{} != {new_done}",
            played.new_done_ms
        );
        assert!(
            (played.others_done_sum_ms - others).abs() < 1e-6,
            "{} != {others}",
            played.others_done_sum_ms
        );
        assert_eq!(done.len(), 6);
        // Without the new job, the others finish sooner: the delay it adds.
        let alone = server.play(0.0, None, &[&change], false);
        let done = drive(busy_server(), busy_server().incoming, &[&change]);
        let others_alone: f64 = done.iter().map(|d| d.1).sum();
        assert!((alone.others_done_sum_ms - others_alone).abs() < 1e-6);
        assert!(others_alone < others);
    }
}
