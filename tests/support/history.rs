//! A note client that records what it saw for `raftlb::lincheck`: every
//! operation with its call and return time on one shared clock, and what the
//! contract says each answer means. A write answered 503, cut off or timed out
//! may or may not have happened (its return stays unknown); a read without a
//! 200 proves nothing and is left out; a request refused before anything was
//! sent (a dead node) never happened.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use raftlb::lincheck::{Op, OpKind};

/// Time since the run's origin in ns, the clock of every recorded operation.
pub fn since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_nanos()).expect("a run is shorter than 584 years")
}

/// What one note request came to.
pub enum Outcome {
    /// It belongs in the history: a completed read or write, or a write of
    /// unknown outcome.
    Recorded(Op),
    /// Refused before anything was sent: it never happened.
    Refused,
    /// A read with no 200: it proves nothing.
    Unanswered,
}

/// Counts of what a client saw, besides its history.
#[derive(Default, Debug)]
pub struct Tally {
    pub ok_writes: usize,
    /// Writes answered 503, cut off or timed out: they may or may not be in.
    pub unknown_writes: usize,
    /// Operations sent to a dead node: refused before anything was sent.
    pub refused: usize,
    pub reads: usize,
    /// Reads answered 503, cut off or timed out: they prove nothing.
    pub unanswered_reads: usize,
    /// Answers the contract does not allow here; a test fails on any.
    pub unexpected: Vec<String>,
}

impl Tally {
    /// Counts `outcome` and moves a recorded operation into `history`.
    pub fn record(&mut self, outcome: Outcome, history: &mut Vec<Op>) {
        match outcome {
            Outcome::Recorded(op) => {
                match (&op.kind, op.returned_ns) {
                    (OpKind::Write(_), Some(_)) => self.ok_writes += 1,
                    (OpKind::Write(_), None) => self.unknown_writes += 1,
                    (OpKind::Read(_), _) => self.reads += 1,
                }
                history.push(op);
            }
            Outcome::Refused => self.refused += 1,
            Outcome::Unanswered => self.unanswered_reads += 1,
        }
    }

    /// Adds another client's counts to these.
    pub fn add(&mut self, other: Tally) {
        self.ok_writes += other.ok_writes;
        self.unknown_writes += other.unknown_writes;
        self.refused += other.refused;
        self.reads += other.reads;
        self.unanswered_reads += other.unanswered_reads;
        self.unexpected.extend(other.unexpected);
    }
}

/// One client of the note, with its own connection pool and call budget.
pub struct NoteClient {
    pub id: usize,
    origin: Instant,
    agent: ureq::Agent,
}

impl NoteClient {
    /// `timeout` bounds each call; it should be longer than a node's own note
    /// timeout (3 s), so that a node's 503 arrives first when it can.
    pub fn new(id: usize, origin: Instant, timeout: Duration) -> NoteClient {
        let agent = super::client(Duration::from_millis(500), timeout);
        NoteClient { id, origin, agent }
    }

    /// PUT `value` to `url` (a node's /note). An answer outside the contract
    /// is added to `unexpected` and the write counted as unknown.
    pub fn write(&self, url: &str, value: String, unexpected: &mut Vec<String>) -> Outcome {
        let invoked_ns = since(self.origin);
        let answer = self
            .agent
            .put(url)
            .header("content-type", "text/plain")
            .send(value.as_str());
        let returned_ns = match answer {
            Ok(mut resp) => {
                let code = resp.status().as_u16();
                let body = resp.body_mut().read_to_string();
                match (code, body) {
                    (200, Ok(_)) => Some(since(self.origin)),
                    (200, Err(_)) | (503, _) => None,
                    (other, body) => {
                        unexpected.push(format!("PUT {url}: {other} {body:?}"));
                        None
                    }
                }
            }
            Err(ureq::Error::Io(e)) if e.kind() == ErrorKind::ConnectionRefused => {
                return Outcome::Refused
            }
            Err(_) => None,
        };
        Outcome::Recorded(Op {
            client: self.id,
            kind: OpKind::Write(value),
            invoked_ns,
            returned_ns,
        })
    }

    /// GET `url` (a node's /note). An answer outside the contract is added to
    /// `unexpected` and the read left out.
    pub fn read(&self, url: &str, unexpected: &mut Vec<String>) -> Outcome {
        let invoked_ns = since(self.origin);
        let value = match self.agent.get(url).call() {
            Ok(mut resp) => {
                let code = resp.status().as_u16();
                match (code, resp.body_mut().read_to_string()) {
                    (200, Ok(body)) => body,
                    (503, _) | (_, Err(_)) => return Outcome::Unanswered,
                    (other, Ok(body)) => {
                        unexpected.push(format!("GET {url}: {other} {body}"));
                        return Outcome::Unanswered;
                    }
                }
            }
            Err(ureq::Error::Io(e)) if e.kind() == ErrorKind::ConnectionRefused => {
                return Outcome::Refused
            }
            Err(_) => return Outcome::Unanswered,
        };
        Outcome::Recorded(Op {
            client: self.id,
            kind: OpKind::Read(value),
            invoked_ns,
            returned_ns: Some(since(self.origin)),
        })
    }
}
