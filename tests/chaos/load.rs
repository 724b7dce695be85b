//! The clients' load: prime lookups, and note writes and reads recorded for the
//! linearizability check, through random nodes (dead, paused and cut-off ones
//! included, as a real client would) until the run's end. Most go to a member
//! of the configuration in force, as clients that learn the members from
//! `/status` do; the others to any node slot, spares and removed nodes too, as
//! a client with an old list does.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use raftlb::lincheck::Op;
use raftlb::raft::Rng;

use crate::support::history::{NoteClient, Tally};
use crate::watch::Watch;

/// Longer than a node's own note timeout (3 s), so a node's 503 arrives first.
const NOTE_TIMEOUT: Duration = Duration::from_secs(4);
/// A prime is computed in well under a millisecond here; this bounds a request
/// to a paused node.
const PRIME_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between a client's operations, in ms: a run of two minutes would
/// otherwise record more note operations than it is useful to check.
const PAUSE_MS: (u64, u64) = (2, 15);
/// The base URL of the node an operation goes to: a member 3 times in 4.
fn pick<'a>(rng: &mut Rng, nodes: &'a [String], watch: &Watch) -> &'a str {
    let members = watch.members();
    let i = match members.is_empty() || rng.chance(1, 4) {
        true => rng.range(0, nodes.len() as u64) as usize,
        false => members[rng.range(0, members.len() as u64) as usize],
    };
    &nodes[i]
}

/// N for the prime lookups: small, so that the workers' time is not what is
/// measured, and checkable against the library.
const MAX_N: u64 = 20_000;

/// What the prime clients saw.
#[derive(Default, Debug)]
pub struct PrimeTally {
    pub ok: usize,
    /// 503 (no live server), 502 (every tried server failed), cut off, timed out.
    pub failed: usize,
    /// Refused before anything was sent: a dead node.
    pub refused: usize,
    /// A 200 with a wrong prime: a safety violation.
    pub wrong: Vec<String>,
    /// A status the contract does not allow.
    pub unexpected: Vec<String>,
}

impl PrimeTally {
    pub fn add(&mut self, other: PrimeTally) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.refused += other.refused;
        self.wrong.extend(other.wrong);
        self.unexpected.extend(other.unexpected);
    }
}

/// One prime client until `end` (from `origin`): its tally, and when (ms from
/// the origin) each right answer came, to tell those after the last fault.
/// `nodes` are the node slots' base URLs (`http://HOST:PORT`).
pub fn primes(
    seed: u64,
    nodes: &[String],
    watch: &Watch,
    origin: Instant,
    end: Duration,
) -> (PrimeTally, Vec<u64>) {
    let agent = crate::support::client(Duration::from_millis(500), PRIME_TIMEOUT);
    let mut rng = Rng::new(seed);
    let mut tally = PrimeTally::default();
    // When each ok answer came (ms from the origin), to count those after the heal.
    let mut ok_at_ms = Vec::new();
    while origin.elapsed() < end {
        std::thread::sleep(Duration::from_millis(rng.range(PAUSE_MS.0, PAUSE_MS.1)));
        let n = rng.range(1, MAX_N + 1);
        let node = pick(&mut rng, nodes, watch);
        let url = format!("{node}/{n}");
        match agent.get(&url).call() {
            Ok(mut resp) => {
                let code = resp.status().as_u16();
                match (code, resp.body_mut().read_to_string()) {
                    (200, Ok(body)) => {
                        let want = raftlb::primes::nth_prime(n);
                        if body.trim().parse::<u64>().ok() == Some(want) {
                            tally.ok += 1;
                            ok_at_ms.push(origin.elapsed().as_millis() as u64);
                        } else {
                            tally
                                .wrong
                                .push(format!("GET {url}: {body:?}, want {want}"));
                        }
                    }
                    (200 | 502 | 503, _) | (_, Err(_)) => tally.failed += 1,
                    (other, Ok(body)) => {
                        tally.unexpected.push(format!("GET {url}: {other} {body}"));
                    }
                }
            }
            Err(ureq::Error::Io(e)) if e.kind() == ErrorKind::ConnectionRefused => {
                tally.refused += 1
            }
            Err(_) => tally.failed += 1,
        }
    }
    (tally, ok_at_ms)
}

/// One note client until `end`: random reads and writes of unique values.
pub fn notes(
    id: usize,
    seed: u64,
    nodes: &[String],
    watch: &Watch,
    origin: Instant,
    end: Duration,
) -> (Vec<Op>, Tally) {
    let note = NoteClient::new(id, origin, NOTE_TIMEOUT);
    let mut rng = Rng::new(seed);
    let mut history = Vec::new();
    let mut tally = Tally::default();
    let mut n = 0u64;
    while origin.elapsed() < end {
        std::thread::sleep(Duration::from_millis(rng.range(PAUSE_MS.0, PAUSE_MS.1)));
        let node = pick(&mut rng, nodes, watch);
        let url = format!("{node}/note");
        let outcome = if rng.chance(1, 2) {
            n += 1;
            note.write(&url, format!("c{id}-{n}"), &mut tally.unexpected)
        } else {
            note.read(&url, &mut tally.unexpected)
        };
        tally.record(outcome, &mut history);
    }
    (history, tally)
}
