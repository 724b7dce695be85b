//! Membership changes on the namespace hosts, while clients write and read the
//! note through several nodes and look up primes: a node SIGKILLed with its
//! disk gone is replaced by a new host through `raftlb member replace`; the
//! cluster grows from three hosts to five and shrinks back; the leader is
//! removed. After each run no acknowledged write is lost and the note's
//! history is linearizable (tests/membership.rs proves the same changes on
//! loopback, without the history).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::cluster::{HostCluster, NODE_IDS};
use crate::load::{self, Clients};
use crate::start_or_skip;
use crate::support::history::Tally;
use crate::support::membership::{cli, member, wait_for_voters};
use crate::support::{self, wait_for};

/// Bound on every wait for a leader or a write.
const SETTLE: Duration = Duration::from_secs(15);
/// How long the clients run before the first change and after the last.
const LOAD_AROUND: Duration = Duration::from_secs(1);
/// Note writers: one per node of a five-node cluster.
const WRITERS: usize = 5;

#[test]
fn a_sigkilled_node_whose_disk_is_gone_is_replaced_by_a_new_host_under_load() {
    let _one = support::exclusive();
    let started = Instant::now();
    let Some(mut cluster) = start_or_skip(HostCluster::start_with(&NODE_IDS, 1, &["F"])) else {
        return;
    };
    let leader = wait_for("a leader all five name", SETTLE, || cluster.agreed_leader());
    // The server is known before the lookups start, so that a failed one
    // says something of the change.
    cluster.inner.wait_for_servers(&[true], SETTLE);
    let clients = Clients::new(&cluster, &cluster.live_ids());
    let victim = cluster.live_ids().into_iter().find(|id| *id != leader);
    let victim = victim.expect("a follower");
    let mut voters: Vec<String> = cluster.live_ids();
    voters.retain(|id| *id != victim);
    voters.push("F".into());
    let mut timings = String::new();
    let (history, tally) = load::under_load(&clients, WRITERS, true, || {
        std::thread::sleep(LOAD_AROUND);
        // A follower's machine dies with its disk (the clients go on asking
        // it until they learn the new members: the lookups fail over).
        let v = cluster.index(&victim);
        cluster.inner.kill_node(v);
        std::fs::remove_dir_all(cluster.inner.data_dir(v)).expect("the disk is gone");
        // F, a new host with a new address, takes its place.
        cluster.add_node("F");
        let addr = cluster.addr("F");
        let asked = Instant::now();
        let args = ["member", "replace", &victim, "F", &addr];
        let (out, refusals) = cli_change(&cluster, &args);
        let answered = asked.elapsed();
        let voters: Vec<&str> = voters.iter().map(String::as_str).collect();
        wait_for_voters(&cluster.inner, &voters);
        timings = format!(
            "`raftlb member replace {victim} F {addr}` answered after {:.2} s{} ({}), F a \
             voter on every member after {:.2} s",
            answered.as_secs_f64(),
            refused(refusals),
            out.trim(),
            asked.elapsed().as_secs_f64()
        );
        clients.set_targets(&cluster, &cluster.live_ids());
        std::thread::sleep(LOAD_AROUND);
    });
    let live = cluster.live_ids();
    let (final_value, history) = load::final_reads(&cluster, &clients, &live, history);
    report("replace", &timings, &tally, &clients, started);
    load::assert_history(&tally, history, &final_value);

    // F, like every program, binds and sends from its host's address only.
    cluster.assert_sockets_on_their_hosts();

    // F's vote counts: with the leader and one more stopped, F and two
    // others are a bare majority of the new configuration, and must elect a
    // leader (with F's vote) and commit.
    let leader = leader_other_than(&cluster, "F");
    let mut stopped: Vec<String> = voters.clone();
    stopped.retain(|id| id != "F" && *id != leader);
    stopped.truncate(1);
    stopped.push(leader.clone());
    for id in &stopped {
        cluster.inner.kill_node(cluster.index(id));
    }
    let stopped_at = Instant::now();
    let next = wait_for("a leader of F and two others", SETTLE, || {
        cluster.agreed_leader()
    });
    let write = wait_for("a write F and two others commit", SETTLE, || {
        let answer = support::send("PUT", &cluster.url(&next, "/note"), b"after F joined");
        answer.filter(|(code, _)| *code == 200)
    });
    assert_eq!(write.0, 200);
    eprintln!(
        "hosts member: {} stopped (leader {leader}); {} elected {next} and committed a write \
         after {:.2} s; {:.1} s in all",
        stopped.join(","),
        cluster.live_ids().join(","),
        stopped_at.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(cluster.exited(), Vec::<String>::new());
}

#[test]
fn grow_3_to_5_shrink_back_and_remove_the_leader_under_load_on_hosts() {
    let _one = support::exclusive();
    let started = Instant::now();
    let Some(mut cluster) = start_or_skip(HostCluster::start_with(&NODE_IDS[..3], 1, &["D", "E"]))
    else {
        return;
    };
    wait_for("a leader all three name", SETTLE, || {
        cluster.agreed_leader()
    });
    cluster.inner.wait_for_servers(&[true], SETTLE);
    let clients = Clients::new(&cluster, &cluster.live_ids());
    let mut timings = Vec::new();
    let (history, tally) = load::under_load(&clients, WRITERS, true, || {
        std::thread::sleep(LOAD_AROUND);
        // Grow: D, then E, each a new host started with a nodes file naming
        // it, then added with `raftlb member add` (it asks the leader).
        for id in ["D", "E"] {
            cluster.add_node(id);
            let asked = Instant::now();
            let (_, refusals) = cli_change(&cluster, &["member", "add", id, &cluster.addr(id)]);
            let took = asked.elapsed().as_secs_f64();
            timings.push(format!("add {id} {took:.2} s{}", refused(refusals)));
            clients.set_targets(&cluster, &cluster.live_ids());
        }
        wait_for_voters(&cluster.inner, &NODE_IDS);
        cluster.assert_sockets_on_their_hosts();
        // Shrink: D and E removed, asked through a follower (it forwards the
        // signed request); each is stopped once its removal committed.
        for id in ["D", "E"] {
            let asked = Instant::now();
            let (refusals, _) = remove_through_a_follower(&cluster, id);
            let took = asked.elapsed().as_secs_f64();
            timings.push(format!("remove {id} {took:.2} s{}", refused(refusals)));
            stop_node(&mut cluster, &clients, id);
        }
        wait_for_voters(&cluster.inner, &NODE_IDS[..3]);
        // Remove the leader: it steps down once that commits, and the other
        // two elect one of them and go on.
        let old = wait_for("an agreed leader", SETTLE, || cluster.agreed_leader());
        let asked = Instant::now();
        let (refusals, leading) = remove_through_a_follower(&cluster, &old);
        assert_eq!(
            leading, old,
            "the leader changed before its removal was asked"
        );
        // (The removed node hears from nobody now: it names no leader.)
        let mut rest = cluster.live_ids();
        rest.retain(|id| *id != old);
        let new = wait_for("a leader the other two name", SETTLE, || {
            let leader = cluster.leader_named_by(&rest)?;
            (leader != old).then_some(leader)
        });
        timings.push(format!(
            "remove the leader {old} {:.2} s{} (then {new} leads)",
            asked.elapsed().as_secs_f64(),
            refused(refusals)
        ));
        stop_node(&mut cluster, &clients, &old);
        let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
        wait_for_voters(&cluster.inner, &rest);
        std::thread::sleep(LOAD_AROUND);
    });
    let live = cluster.live_ids();
    let (final_value, history) = load::final_reads(&cluster, &clients, &live, history);
    report(
        "grow and shrink",
        &timings.join(", "),
        &tally,
        &clients,
        started,
    );
    load::assert_history(&tally, history, &final_value);
    // The two remaining voters still commit.
    let leader = wait_for("an agreed leader", SETTLE, || cluster.agreed_leader());
    let answer = support::send("PUT", &cluster.url(&leader, "/note"), b"after");
    assert_eq!(answer.map(|a| a.0), Some(200), "a write through {leader}");
    assert_eq!(cluster.exited(), Vec::<String>::new());
}

/// The leader all running nodes name, made another than node `not` when
/// `not` leads (it is paused until the others elect one), so that stopping
/// the leader takes an election without `not`.
fn leader_other_than(cluster: &HostCluster, not: &str) -> String {
    let leader = wait_for("an agreed leader", SETTLE, || cluster.agreed_leader());
    if leader != not {
        return leader;
    }
    let paused = cluster.inner.nodes[cluster.index(not)].as_ref();
    let paused = paused.expect("it runs");
    paused.signal("STOP");
    let mut others = cluster.live_ids();
    others.retain(|id| id != not);
    let elected = wait_for(&format!("a leader while {not} is paused"), SETTLE, || {
        cluster.leader_named_by(&others).filter(|l| l != not)
    });
    paused.signal("CONT");
    let leader = wait_for("an agreed leader", SETTLE, || cluster.agreed_leader());
    assert_ne!(
        leader, not,
        "{not} leads again after {elected} was elected without it"
    );
    eprintln!("hosts member: {not} led; paused, {elected} was elected; {leader} leads");
    leader
}

/// `POST /admin/member` removing `id`, sent to a running node that neither
/// leads nor is `id`, until it answers 200 (committed): how many times it
/// was refused for now, and the leader every node named when it was asked.
fn remove_through_a_follower(cluster: &HostCluster, id: &str) -> (usize, String) {
    let mut leading = String::new();
    let refusals = until_accepted(&format!("remove {id}"), cluster, || {
        let leader = wait_for("an agreed leader", SETTLE, || cluster.agreed_leader());
        leading = leader.clone();
        let via = (cluster.live_ids().into_iter())
            .find(|x| *x != leader && x != id)
            .expect("a follower to ask");
        let change = json!({"op":"remove","id":id});
        match member(&cluster.inner, cluster.index(&via), change, None) {
            (200, _) => Ok(()),
            (code, body) => Err(format!("via {via}: {code} {body}")),
        }
    });
    (refusals, leading)
}

/// `raftlb member ARGS...` until it exits 0: its output, and how many times
/// it was refused for now.
fn cli_change(cluster: &HostCluster, args: &[&str]) -> (String, usize) {
    let mut output = String::new();
    let refusals = until_accepted(&args.join(" "), cluster, || {
        match cli(&cluster.inner, args) {
            (Some(0), out, _) => {
                output = out;
                Ok(())
            }
            (code, out, err) => Err(format!("exit {code:?}: {out}{err}")),
        }
    });
    (output, refusals)
}

/// How many times a change may be refused for now before the test fails.
const REFUSALS_MAX: usize = 20;

/// Asks for a change (`ask`: Ok, or the refusal) until it is accepted; asks
/// again only after a refusal that says nothing was done, for a reason that
/// passes: no leader known (an election is under way), or a configuration
/// entry not committed yet (the leader binds a new member's data dir by one
/// right after it joins). At most [`REFUSALS_MAX`] refusals, 100 ms apart;
/// how many there were.
fn until_accepted(
    what: &str,
    cluster: &HostCluster,
    mut ask: impl FnMut() -> Result<(), String>,
) -> usize {
    for refusals in 0..=REFUSALS_MAX {
        match ask() {
            Ok(()) => return refusals,
            Err(why) if refused_for_now(&why) && refusals < REFUSALS_MAX => {
                eprintln!("hosts member: {what} refused for now: {}", why.trim());
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(why) => panic!("{what}: {why}\n{}", cluster.inner.logs()),
        }
    }
    unreachable!("the last refusal panics")
}

/// Whether a change's refusal says nothing was done, for a reason that passes.
fn refused_for_now(why: &str) -> bool {
    why.contains("no leader known") || why.contains("has not committed yet")
}

/// " after N refusals for now" when there were any.
fn refused(refusals: usize) -> String {
    if refusals == 0 {
        String::new()
    } else {
        format!(" after {refusals} refusal(s) for now")
    }
}

/// The clients stop using node `id`, then it is SIGKILLed.
fn stop_node(cluster: &mut HostCluster, clients: &Clients, id: &str) {
    let rest: Vec<String> = (cluster.live_ids().into_iter())
        .filter(|x| x != id)
        .collect();
    clients.set_targets(cluster, &rest);
    cluster.inner.kill_node(cluster.index(id));
}

/// The run's numbers, one line.
fn report(what: &str, timings: &str, tally: &Tally, clients: &Clients, started: Instant) {
    eprintln!(
        "hosts member {what}: {timings}; writes {} acknowledged, {} of unknown outcome, {} \
         refused (node gone); {} reads; {}; {:.1} s",
        tally.ok_writes,
        tally.unknown_writes,
        tally.refused,
        tally.reads,
        clients.primes(),
        started.elapsed().as_secs_f64()
    );
}
