//! The clients of the cluster on hosts, from the machine's namespace: note
//! writers and a note reader recording a history for `raftlb::lincheck`, and
//! optionally prime lookups, through the nodes a test names now (it changes
//! them as members come and go). Writer k goes through the k-th of those
//! nodes (modulo their number), so that with one writer per node the writes
//! through nodes a fault spares go on while those through the others wait out
//! their deadline.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use raftlb::lincheck::{check_register, lost_writes, Op, OpKind, Verdict};

use crate::cluster::HostCluster;
use crate::support::history::{NoteClient, Outcome, Tally};
use crate::support::wait_for;

/// Bounds on each client's loop, besides the stop flag.
const CLIENT_OPS_MAX: usize = 5_000;
/// Bound on each final read's retries.
const FINAL_READ_LIMIT: Duration = Duration::from_secs(15);
/// What `GET /10000` must answer: the 10,000th prime.
const PRIME_10000: &str = "104729";
/// How many failed lookups' answers are kept for the summary.
const PRIME_FAILURES_KEPT: usize = 10;

/// A node the clients go through: its id and `http://HOST:PORT`.
#[derive(Clone)]
struct Target {
    id: String,
    url: String,
}

/// What the clients saw and did, shared with the test's own thread.
pub struct Clients {
    /// The clock of every recorded operation.
    pub origin: Instant,
    pub acked_writes: AtomicUsize,
    pub stop: AtomicBool,
    /// The nodes the clients go through now, in the test's order.
    targets: Mutex<Vec<Target>>,
    /// Prime lookups answered (by the first node asked or the next ones).
    pub primes_ok: AtomicUsize,
    /// Prime lookups no node answered.
    pub primes_failed: AtomicUsize,
    /// Prime lookups a node failed and another then answered.
    pub primes_retried: AtomicUsize,
    /// What the nodes answered to the first failed lookups.
    prime_failures: Mutex<Vec<String>>,
}

impl Clients {
    /// Clients going through nodes `ids`.
    pub fn new(cluster: &HostCluster, ids: &[String]) -> Clients {
        let clients = Clients {
            origin: Instant::now(),
            acked_writes: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            targets: Mutex::new(Vec::new()),
            primes_ok: AtomicUsize::new(0),
            primes_failed: AtomicUsize::new(0),
            primes_retried: AtomicUsize::new(0),
            prime_failures: Mutex::new(Vec::new()),
        };
        clients.set_targets(cluster, ids);
        clients
    }

    /// From the next request on, the clients go through nodes `ids`.
    pub fn set_targets(&self, cluster: &HostCluster, ids: &[String]) {
        assert!(!ids.is_empty(), "the clients need a node");
        let targets = ids.iter().map(|id| Target {
            id: id.clone(),
            url: cluster.url(id, ""),
        });
        *self.targets.lock().unwrap_or_else(|e| e.into_inner()) = targets.collect();
    }

    /// The k-th node the clients go through now (modulo their number).
    fn target(&self, k: usize) -> Target {
        let targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        targets[k % targets.len()].clone()
    }

    fn target_count(&self) -> usize {
        self.targets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// "primes N ok (M after another node failed) / F failed", and what
    /// the nodes answered to the first failed ones, for a test's summary.
    pub fn primes(&self) -> String {
        let count = |n: &AtomicUsize| n.load(Ordering::Relaxed);
        let failures = self
            .prime_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        format!(
            "primes {} ok ({} after another node failed) / {} failed{}",
            count(&self.primes_ok),
            count(&self.primes_retried),
            count(&self.primes_failed),
            if failures.is_empty() {
                String::new()
            } else {
                format!(" {failures:?}")
            }
        )
    }
}

/// Runs `writers` note writers, a note reader and, with `primes`, a prime
/// looker-up while `body` runs on this thread; then stops them and returns
/// the note's history and the counts. A panic in `body` is passed on once
/// the clients stopped.
pub fn under_load(
    clients: &Clients,
    writers: usize,
    primes: bool,
    body: impl FnOnce(),
) -> (Vec<Op>, Tally) {
    let (history, tally, result) = std::thread::scope(|s| {
        let writing: Vec<_> = (0..writers)
            .map(|k| s.spawn(move || write_loop(clients, k)))
            .collect();
        let reader = s.spawn(|| read_loop(clients));
        let primer = primes.then(|| s.spawn(|| prime_loop(clients)));
        let result = std::panic::catch_unwind(AssertUnwindSafe(body));
        clients.stop.store(true, Ordering::Relaxed);
        let (mut history, mut tally) = reader.join().expect("reader thread");
        for writer in writing {
            let (writes, write_tally) = writer.join().expect("writer thread");
            history.extend(writes);
            tally.add(write_tally);
        }
        if let Some(primer) = primer {
            primer.join().expect("prime thread");
        }
        (history, tally, result)
    });
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    (history, tally)
}

/// Writes unique values (`0:A0`, `0:A1`, ...: the writer, the node, a count)
/// through writer k's node, 20 ms apart, until told to stop.
fn write_loop(clients: &Clients, k: usize) -> (Vec<Op>, Tally) {
    let client = NoteClient::new(10 + k, clients.origin, Duration::from_secs(4));
    let (mut history, mut tally) = (Vec::new(), Tally::default());
    for n in 0..CLIENT_OPS_MAX {
        if clients.stopped() {
            break;
        }
        let target = clients.target(k);
        let url = format!("{}/note", target.url);
        let value = format!("{k}:{}{n}", target.id);
        let outcome = client.write(&url, value, &mut tally.unexpected);
        if let Outcome::Recorded(Op {
            returned_ns: Some(_),
            ..
        }) = &outcome
        {
            clients.acked_writes.fetch_add(1, Ordering::Relaxed);
        }
        tally.record(outcome, &mut history);
        std::thread::sleep(Duration::from_millis(20));
    }
    (history, tally)
}

/// Reads the note through the nodes in turn, 50 ms apart, until told to stop.
fn read_loop(clients: &Clients) -> (Vec<Op>, Tally) {
    let client = NoteClient::new(2, clients.origin, Duration::from_secs(4));
    let (mut history, mut tally) = (Vec::new(), Tally::default());
    for n in 0..CLIENT_OPS_MAX {
        if clients.stopped() {
            break;
        }
        let url = format!("{}/note", clients.target(n + 2).url);
        let outcome = client.read(&url, &mut tally.unexpected);
        tally.record(outcome, &mut history);
        std::thread::sleep(Duration::from_millis(50));
    }
    (history, tally)
}

/// Looks up the 10,000th prime through the nodes in turn, 10 ms apart, until
/// told to stop; a lookup a node fails goes on to the next nodes (as the
/// CLI's failover does), and fails when none answers it right.
fn prime_loop(clients: &Clients) {
    let agent = crate::support::client(Duration::from_millis(500), Duration::from_secs(4));
    let ask = |target: Target| {
        let failed = |why: String| Err(format!("{}: {why}", target.id));
        match agent.get(&format!("{}/10000", target.url)).call() {
            Ok(mut resp) => match (resp.status().as_u16(), resp.body_mut().read_to_string()) {
                (200, Ok(body)) if body == PRIME_10000 => Ok(()),
                (code, body) => failed(format!("{code} {body:?}")),
            },
            Err(e) => failed(e.to_string()),
        }
    };
    for n in 0..CLIENT_OPS_MAX {
        if clients.stopped() {
            break;
        }
        let mut answers = Vec::new();
        for t in 0..clients.target_count() {
            answers.push(ask(clients.target(n + t)));
            if answers.last().is_some_and(Result::is_ok) {
                break;
            }
        }
        match answers.iter().position(Result::is_ok) {
            Some(0) => clients.primes_ok.fetch_add(1, Ordering::Relaxed),
            Some(_) => {
                clients.primes_retried.fetch_add(1, Ordering::Relaxed);
                clients.primes_ok.fetch_add(1, Ordering::Relaxed)
            }
            None => {
                let mut failures = clients
                    .prime_failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if failures.len() < PRIME_FAILURES_KEPT {
                    failures.extend(answers.into_iter().filter_map(Result::err));
                }
                clients.primes_failed.fetch_add(1, Ordering::Relaxed)
            }
        };
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Once the clients stopped and every fault healed: the note read through
/// each of nodes `ids` (each read linearizable), all the same; that value,
/// and the history with those reads.
pub fn final_reads(
    cluster: &HostCluster,
    clients: &Clients,
    ids: &[String],
    mut history: Vec<Op>,
) -> (String, Vec<Op>) {
    let client = NoteClient::new(3, clients.origin, Duration::from_secs(4));
    let mut values = Vec::new();
    for id in ids {
        let url = cluster.url(id, "/note");
        let what = format!("a final read through node {id}");
        let op = wait_for(&what, FINAL_READ_LIMIT, || {
            let mut unexpected = Vec::new();
            match client.read(&url, &mut unexpected) {
                Outcome::Recorded(op) => Some(op),
                _ => None,
            }
        });
        if let OpKind::Read(value) = &op.kind {
            values.push(value.clone());
        }
        history.push(op);
    }
    assert!(
        values.windows(2).all(|w| w[0] == w[1]),
        "final reads differ: {values:?}"
    );
    (values[0].clone(), history)
}

/// Enough writes acknowledged to judge, nothing answered outside the
/// contract, and the note's history (with the final reads, ending at
/// `final_value`) lost no acknowledged write and is linearizable as a
/// register starting empty.
pub fn assert_history(tally: &Tally, mut history: Vec<Op>, final_value: &str) {
    assert_eq!(
        tally.unexpected,
        Vec::<String>::new(),
        "answers outside the contract"
    );
    assert!(
        tally.ok_writes >= 20,
        "too few writes acknowledged to judge: {tally:?}"
    );
    history.sort_by_key(|op| op.invoked_ns);
    let lost: Vec<&Op> = lost_writes(&history, final_value)
        .iter()
        .map(|i| &history[*i])
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged writes lost (the note ends at {final_value:?}): {lost:?}"
    );
    match check_register("", &history).expect("the check finishes") {
        Verdict::Linearizable { .. } => {}
        Verdict::NotLinearizable { explanation } => {
            panic!("the note's history is not linearizable: {explanation}")
        }
    }
}
