//! The balancing simulator's scenarios (tests/balance_sim), short and seeded:
//! raftlb's policy must be ahead of least connections and of power of two
//! choices in every scenario where load matters, and no worse than the best
//! reference on even machines, and in an open loop it must move requests off
//! a machine a neighbour moved onto within 2 s. This compares simulated time, not the wall
//! clock, so it is deterministic and no timing assertion of the machine.

mod balance_sim;

use balance_sim::policies::Kind;
use balance_sim::scenarios::{self, Length};
use balance_sim::Load;
use raftlb::balance::Params;

const SEEDS: [u64; 2] = [11, 12];
const LENGTH: Length = Length {
    duration_ms: 20_000.0,
    warmup_ms: 2_000.0,
};

/// raftlb's p99 over the better of leastconn's and P2C's that each scenario
/// must stay under. The weak machine (alone and behind five doors) is where
/// measured speed matters most; a noisy neighbour takes a third to two thirds
/// of one machine, which least connections already half-sees through the
/// slower answers, so the margin there is small (3-4 % closed loop, about 10 %
/// open loop, at the time of writing). Even machines: no worse
/// than the best reference (round robin included) but for noise.
fn required_ratio(scenario: &str) -> f64 {
    match scenario {
        "weak" | "5 doors" => 0.8,
        "noisy" | "shift" => 0.99,
        "even" => 1.05,
        other => panic!("no threshold for scenario {other}"),
    }
}

#[test]
fn raftlb_policy_beats_leastconn_and_p2c_on_p99_in_every_scenario() {
    let params = Params::default();
    let mut failures = Vec::new();
    let all = scenarios::all(LENGTH);
    let mut rows = Vec::new();
    for s in &all {
        let p99 = |kind| scenarios::run_seeds(s, kind, &SEEDS, &params).percentile(99.0);
        let raftlb = p99(Kind::Raftlb);
        let mut best = p99(Kind::LeastConn).min(p99(Kind::P2c));
        if s.name == "even" {
            best = best.min(p99(Kind::RoundRobin));
        }
        let ratio = raftlb / best;
        let load = scenarios::load_name(s.load);
        rows.push(format!(
            "{:<8} {:<10} raftlb p99 {raftlb:7.1} ms, best reference {best:7.1} ms, ratio {ratio:.2} (required <= {:.2})",
            s.name,
            load,
            required_ratio(s.name)
        ));
        if ratio > required_ratio(s.name) {
            failures.push(format!("{} {load}: ratio {ratio:.2}", s.name));
        }
    }
    println!("{}", rows.join("\n"));
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        rows.join("\n")
    );
}

/// How far a closed loop's Little's L (throughput x mean latency) may be
/// from its client count. Counted from the start (no warmup), the latencies
/// sum to exactly clients x duration (those unanswered at the end count with
/// their age), over `answered + clients` requests: L is short by
/// `clients / answered`, under 0.8 % at round robin's 216 req/s on the weak
/// machine for 20 s.
const LITTLE_TOLERANCE: f64 = 0.015;
const LITTLE_LENGTH: Length = Length {
    duration_ms: 20_000.0,
    warmup_ms: 0.0,
};

#[test]
fn a_closed_loop_holds_one_request_per_client_under_every_policy() {
    // Little's law as a check that the simulator conserves clients: each
    // sends its next request the moment its last is answered, so the system
    // always holds exactly `clients` requests and X x W must be that, for any
    // policy. A client lost (an answer that sends nothing) or doubled (one
    // that sends twice) moves it by 1/32 times the share of the run left.
    let params = Params::default();
    let mut failures = Vec::new();
    for s in scenarios::all(LITTLE_LENGTH) {
        let Load::Closed { clients } = s.load else {
            continue;
        };
        for kind in Kind::ALL {
            let in_system = balance_sim::run(&s, kind, SEEDS[0], &params).in_system();
            let off = in_system / clients as f64 - 1.0;
            if off.abs() > LITTLE_TOLERANCE {
                failures.push(format!(
                    "{} {}: X x W = {in_system:.2} for {clients} clients",
                    s.name,
                    kind.name()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_run_replays_exactly_from_its_seed() {
    let s = &scenarios::all(Length {
        duration_ms: 3_000.0,
        warmup_ms: 500.0,
    })[2];
    let a = balance_sim::run(s, Kind::Raftlb, 5, &Params::default());
    let b = balance_sim::run(s, Kind::Raftlb, 5, &Params::default());
    assert_eq!(a.latencies_ms, b.latencies_ms);
    assert_eq!(a.sent, b.sent);
}

/// Requests an open loop may still hold at its node at the end: at its
/// 470-630 req/s, about 200 ms of arrivals; a queue that stopped draining
/// holds thousands by then.
const HELD_AT_END_MAX: usize = 100;

#[test]
fn holding_requests_at_the_node_keeps_its_limit_and_sends_every_request() {
    // The node queue of `Kind::RaftlbHold` / `LeastConnHold` (HAProxy's
    // per-server maxconn): no node ever has more than its limit in flight at
    // one server (without the limit, 32 closed-loop clients put more there),
    // and the queue drains: the requests keep being answered (a closed loop
    // loses at most a fifth of its req/s to the limit) and an open loop's
    // queue is short at the end.
    let params = Params::default();
    for s in scenarios::all(LENGTH) {
        let unlimited = balance_sim::run(&s, Kind::Raftlb, SEEDS[0], &params);
        let closed = matches!(s.load, Load::Closed { .. });
        if closed {
            assert!(
                unlimited.most_in_flight > 2,
                "{}: {}",
                s.name,
                unlimited.most_in_flight
            );
        }
        for kind in [
            Kind::RaftlbHold(1),
            Kind::RaftlbHold(2),
            Kind::LeastConnHold(2),
            Kind::RaftlbHoldCostly(1),
        ] {
            let held = balance_sim::run(&s, kind, SEEDS[0], &params);
            let what = format!(
                "{} {} {}",
                s.name,
                scenarios::load_name(s.load),
                kind.name()
            );
            assert!(
                held.most_limited <= kind.slots(),
                "{what}: {} in flight",
                held.most_limited
            );
            assert!(
                held.answered as f64 > 0.75 * unlimited.answered as f64,
                "{what}: {} answered, {} without the queue",
                held.answered,
                unlimited.answered
            );
            if !closed {
                assert!(
                    held.held_at_end <= HELD_AT_END_MAX,
                    "{what}: {} held at the end",
                    held.held_at_end
                );
            }
        }
    }
}

#[test]
fn in_a_closed_loop_the_node_queue_not_the_policy_cuts_the_p99() {
    // What the simulator found (README, "How a node chooses a server"): with
    // one node and 32 closed-loop clients, holding requests at the node with
    // at most one in flight per server cuts the p99 under half of least
    // connections' on even and weak machines, and least connections with the
    // same queue does as well as raftlb's policy with it: first come first
    // served at the node, not a better choice of server, does it.
    let params = Params::default();
    for s in scenarios::all(LENGTH) {
        if !matches!(s.load, Load::Closed { .. }) || !["even", "weak"].contains(&s.name) {
            continue;
        }
        let p99 = |kind| scenarios::run_seeds(&s, kind, &SEEDS, &params).percentile(99.0);
        let (plain, raftlb_held, leastconn_held) = (
            p99(Kind::LeastConn),
            p99(Kind::RaftlbHold(1)),
            p99(Kind::LeastConnHold(1)),
        );
        assert!(
            raftlb_held < 0.5 * plain,
            "{}: {raftlb_held} vs {plain}",
            s.name
        );
        let ratio = raftlb_held / leastconn_held;
        assert!((0.9..1.1).contains(&ratio), "{}: {ratio}", s.name);
    }
}

#[test]
fn holding_costly_requests_while_few_are_open_cuts_the_open_loops_p99_alone() {
    // `Kind::RaftlbHoldCostly`: a costly request waits at its node while every
    // server has one of the node's costly requests, if the node has few open.
    // With one door, the open loop's p99 on even machines is under 0.85 of
    // raftlb's without the hold (0.74-0.79), no worse but for noise on the
    // others (0.93-1.04), and closed loops are the same within 5 % (the
    // bound on open costly requests: without it they were 1.2-1.9x). Behind
    // five doors it costs the closed loop (README).
    let params = Params::default();
    for s in scenarios::all(LENGTH) {
        if s.nodes != 1 {
            continue;
        }
        let p99 = |kind| scenarios::run_seeds(&s, kind, &SEEDS, &params).percentile(99.0);
        let (plain, held) = (p99(Kind::Raftlb), p99(Kind::RaftlbHoldCostly(1)));
        let what = format!(
            "{} {}: {held:.1} vs {plain:.1} ms",
            s.name,
            scenarios::load_name(s.load)
        );
        if matches!(s.load, Load::Closed { .. }) {
            assert!((0.95..1.05).contains(&(held / plain)), "{what}");
        } else {
            let most = if s.name == "even" { 0.85 } else { 1.05 };
            assert!(held < most * plain, "{what}");
        }
    }
}

#[test]
fn a_limit_on_each_servers_own_count_does_not_hold_five_doors_as_one() {
    // `Kind::RaftlbShared(1)`: each answer carries its server's count, and a
    // node sends only where that count (plus its sends since) is under 1.
    // Behind one door that is the per-node queue (`RaftlbHold(1)`), within
    // 10 % (the same p99 at the time of writing). Behind five, where the
    // per-node queue holds 5 at a server, the server's count should have
    // kept p99 near one door's, and does not: over 1.2x (1.87 here, 1.77 in
    // `make bench-parts`), because a node hears a server's count only in its
    // own answers, and what it heard last from a server it stopped sending
    // to stays true for it (README).
    let params = Params::default();
    let all = scenarios::all(LENGTH);
    let closed = |name| {
        all.iter()
            .find(|s| s.name == name && matches!(s.load, Load::Closed { .. }))
            .expect("the scenario has a closed loop")
    };
    let p99 = |s, kind| scenarios::run_seeds(s, kind, &SEEDS, &params).percentile(99.0);
    // Five doors is the weak scenario's machines behind five nodes.
    let (one, five) = (closed("weak"), closed("5 doors"));
    let queue1 = p99(one, Kind::RaftlbHold(1));
    let shared_one = p99(one, Kind::RaftlbShared(1));
    assert!(
        (0.9..1.1).contains(&(shared_one / queue1)),
        "one door: {shared_one:.1} against the per-node queue's {queue1:.1} ms"
    );
    let shared_five = p99(five, Kind::RaftlbShared(1));
    assert!(
        shared_five > 1.2 * shared_one,
        "five doors: {shared_five:.1} against one door's {shared_one:.1} ms"
    );
}

/// The shift scenario's reaction, measured as `make bench`'s shift row does
/// (server 0's request share over 1 s against the 5 s before the neighbour
/// moved onto it): in an open loop raftlb's share halves within the issue's
/// 2 s; round robin's never does, so the measure can fail. (In a closed loop
/// the clairvoyant oracle's share does not halve either: cheap requests
/// still finish soonest there. BENCHMARKS.md's shift row is a closed loop.)
#[test]
fn in_an_open_loop_raftlb_moves_requests_off_a_machine_a_neighbour_moved_onto() {
    let params = Params::default();
    let shift = scenarios::all(LENGTH)
        .into_iter()
        .find(|s| s.name == "shift" && matches!(s.load, Load::Open { .. }))
        .expect("the shift scenario has an open loop");
    let moved = scenarios::neighbour_arrives(&shift).expect("the neighbour moves");
    let halving = |kind| {
        let outcome = scenarios::run_seeds(&shift, kind, &SEEDS, &params);
        scenarios::halving(&outcome, moved.server, moved.at_ms)
    };
    let (before, halved) = halving(Kind::Raftlb);
    assert!(
        halved.is_some_and(|ms| ms <= 2_000.0),
        "raftlb: share {before:.1} % before, halved after {halved:?} ms"
    );
    let (before, halved) = halving(Kind::RoundRobin);
    assert_eq!(halved, None, "round robin: share {before:.1} % before");
}
