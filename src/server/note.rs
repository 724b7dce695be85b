//! `GET /note`, `PUT /note` and `POST /note`: the replicated note.
//!
//! The handler checks the request (413 over 32 KiB, 400 for text that is not
//! UTF-8 or a form without `textareaData`) and hands it to the event loop, whose
//! answer comes within `NOTE_TIMEOUT`: 200 once a write is committed and applied
//! here, or a linearizable read is served; 503 with what is known otherwise. The
//! wait is the whole point: a 200 is a promise.
//!
//! The wait happens on a pool of its own ([`NoteWaiters`]), not on the HTTP
//! handler threads: the handler gives the request away (`Answer::Later`) and
//! takes the next one at once. A handler pool sized for waits (one thread per
//! waiting write) is too big for prime requests, which are answered in a
//! fraction of a millisecond: measured on 2 cores at 64 keep-alive clients
//! through one node, 128 handler threads gave 29-30k primes/s with p99 13 ms,
//! 16 gave 33-35k/s with p99 4.3 ms (more threads than requests in flight means
//! a sleep and a wake-up per request, and more runnable threads per core).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tiny_http::{Method, Request};

use super::NodeHttp;
use crate::http::{self, Answer, Reply};
use crate::runtime::event_loop::LoopInput;
use crate::runtime::notes::{NoteOutcome, NOTE_TIMEOUT};
use crate::runtime::shared::Shared;
use crate::table::MAX_NOTE_BYTES;

/// The form field the original NoteRaft page posted.
pub const FORM_FIELD: &str = "textareaData";

/// A form body may be percent-encoded, up to three bytes per note byte.
const MAX_FORM_BYTES: usize = 3 * MAX_NOTE_BYTES + 1024;

/// The header that carries the log index of a write or read.
pub const INDEX_HEADER: &str = "X-Raftlb-Index";

/// How many note requests may wait for Raft at once on one node (a thread of
/// the waiters' pool each); beyond it, 503 at once. 64 writers at a time is
/// what the benchmark asks of a leader.
pub const WAITING_MAX: usize = 64;

/// The loop answers every request by its deadline; the extra second only guards
/// against a loop that stopped.
const WAIT_LIMIT: Duration = Duration::from_secs(NOTE_TIMEOUT.as_secs() + 1);

/// The threads that wait for the event loop's answers to note requests and
/// send them, one request each at a time. Admission is counted, so that every
/// admitted request finds a thread at once: a request queued behind a write
/// that waits out its 3 s without a quorum would otherwise miss its own deadline.
pub struct NoteWaiters {
    jobs: Sender<Waiting>,
    waiting: Arc<AtomicUsize>,
    max: usize,
}

/// A request given away by its handler, and where its answer will come from.
struct Waiting {
    request: Request,
    answer: Receiver<NoteOutcome>,
    /// Leaves the admission count just before the answer is sent.
    slot: Slot,
}

/// One admitted note request.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl NoteWaiters {
    /// Starts `max` (at least one) waiter threads; they end once every
    /// `NoteWaiters` handle and every request given to them is gone.
    pub fn start(max: usize, shared: Arc<Shared>) -> std::io::Result<NoteWaiters> {
        let max = max.max(1);
        let (jobs, queue) = crossbeam_channel::bounded(max);
        for i in 0..max {
            let (queue, shared): (Receiver<Waiting>, _) = (queue.clone(), Arc::clone(&shared));
            std::thread::Builder::new()
                .name(format!("note-wait-{i}"))
                .spawn(move || {
                    for job in queue {
                        let reply = reply_for(job.answer.recv_timeout(WAIT_LIMIT).ok());
                        job.finish(&shared, reply);
                    }
                })?;
        }
        Ok(NoteWaiters {
            jobs,
            waiting: Arc::new(AtomicUsize::new(0)),
            max,
        })
    }

    /// A place for one more waiting request, or None when all are taken.
    fn admit(&self) -> Option<Slot> {
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(Arc::clone(&self.waiting));
        (before < self.max).then_some(slot)
    }
}

impl Waiting {
    /// Counts and sends the reply (the handler pool counts its own). The place
    /// is given up first: a client that sends its next request the moment this
    /// answer arrives must find it free (seen otherwise: 64 closed-loop writers
    /// turned away with 503 "too many note requests" a third of the time).
    fn finish(self, shared: &Shared, reply: Reply) {
        let Waiting { request, slot, .. } = self;
        drop(slot);
        shared.metrics.count_response(reply.status_code().0);
        http::respond(request, reply);
    }
}

pub fn handle(node: &NodeHttp, request: &mut Request) -> Answer {
    match request.method() {
        Method::Get | Method::Head => read(node),
        Method::Put => match read_text(request) {
            Ok(text) => write(node, text),
            Err(reply) => reply.into(),
        },
        _ => match read_form(request) {
            Ok(text) => write(node, text),
            Err(reply) => reply.into(),
        },
    }
}

fn read(node: &NodeHttp) -> Answer {
    let (reply, answer) = crossbeam_channel::bounded(1);
    let deadline = Instant::now() + NOTE_TIMEOUT;
    ask(node, LoopInput::ReadNote { reply, deadline }, answer)
}

fn write(node: &NodeHttp, text: String) -> Answer {
    let (reply, answer) = crossbeam_channel::bounded(1);
    let deadline = Instant::now() + NOTE_TIMEOUT;
    let input = LoopInput::SetNote {
        text,
        reply,
        deadline,
    };
    ask(node, input, answer)
}

/// Hands `input` to the event loop and the request to the waiters, who send
/// the loop's answer when it comes.
fn ask(node: &NodeHttp, input: LoopInput, answer: Receiver<NoteOutcome>) -> Answer {
    let waiters = &node.note_waiters;
    let Some(slot) = waiters.admit() else {
        return http::error(
            503,
            &format!(
                "too many note requests waiting on this node ({}); try again",
                waiters.max
            ),
        )
        .into();
    };
    if node.input.try_send(input).is_err() {
        return http::error(503, "node busy: request queue full, try again").into();
    }
    let (jobs, shared) = (waiters.jobs.clone(), Arc::clone(&node.shared));
    Answer::Later(Box::new(move |request| {
        let job = Waiting {
            request,
            answer,
            slot,
        };
        // Full only when every waiter is stuck sending to a client that does
        // not read (admission keeps at most `max` jobs, the queue's size, in
        // it); closed only when the waiters are gone, while stopping.
        match jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => {
                let reason = "node busy: the request went to Raft but cannot be waited \
                              for; a write may or may not take effect";
                job.finish(&shared, http::error(503, reason));
            }
            Err(TrySendError::Disconnected(job)) => job.finish(&shared, reply_for(None)),
        }
    }))
}

/// The HTTP answer to the loop's outcome (None: no answer from the loop).
fn reply_for(outcome: Option<NoteOutcome>) -> Reply {
    match outcome.unwrap_or_else(|| NoteOutcome::Unavailable("this node is stopping".into())) {
        NoteOutcome::Saved { index } => http::with_header(
            http::text(200, format!("saved at index {index}\n")),
            INDEX_HEADER,
            &index.to_string(),
        ),
        NoteOutcome::Read { text, index } => {
            http::with_header(http::text(200, text), INDEX_HEADER, &index.to_string())
        }
        NoteOutcome::Unavailable(reason) => http::error(503, &reason),
    }
}

/// `PUT /note`: the body is the note.
fn read_text(request: &mut Request) -> Result<String, Reply> {
    let body = http::read_body(request, MAX_NOTE_BYTES).map_err(|e| too_large(&e))?;
    String::from_utf8(body).map_err(|e| {
        http::error(
            400,
            &format!(
                "the note must be UTF-8: invalid byte at offset {}",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// `POST /note`: the note is the form field `textareaData`, as the original
/// page sent it (application/x-www-form-urlencoded).
fn read_form(request: &mut Request) -> Result<String, Reply> {
    let body = http::read_body(request, MAX_FORM_BYTES).map_err(|e| too_large(&e))?;
    let text = form_field(&body, FORM_FIELD)
        .map_err(|reason| http::error(400, &reason))?
        .ok_or_else(|| {
            http::error(
                400,
                &format!(
                    "POST /note takes a form with field {FORM_FIELD} \
                     (application/x-www-form-urlencoded); PUT takes the text itself"
                ),
            )
        })?;
    if text.len() > MAX_NOTE_BYTES {
        return Err(http::error(
            413,
            &format!("the note is {} bytes, over {MAX_NOTE_BYTES}", text.len()),
        ));
    }
    Ok(text)
}

fn too_large(e: &http::BodyError) -> Reply {
    match e {
        http::BodyError::TooLarge { .. } => http::error(
            413,
            &format!("the note is limited to {MAX_NOTE_BYTES} bytes (32 KiB)"),
        ),
        other => other.reply(),
    }
}

/// The value of field `name` in an urlencoded form body (the first one), decoded.
pub fn form_field(body: &[u8], name: &str) -> Result<Option<String>, String> {
    for pair in body.split(|b| *b == b'&') {
        let (key, value) = match pair.iter().position(|b| *b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        if url_decode(key)? == name.as_bytes() {
            let value = url_decode(value)?;
            return String::from_utf8(value)
                .map(Some)
                .map_err(|_| format!("form field {name} is not UTF-8"));
        }
    }
    Ok(None)
}

/// Percent-decoding with `+` as a space, as browsers encode forms.
fn url_decode(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| "bad percent-encoding in the form field".to_string())?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_stops_at_the_maximum_and_a_place_frees_on_drop() {
        let waiting = Arc::new(AtomicUsize::new(0));
        let (jobs, _queue) = crossbeam_channel::bounded(2);
        let waiters = NoteWaiters {
            jobs,
            waiting: Arc::clone(&waiting),
            max: 2,
        };
        let a = waiters.admit().expect("first");
        let b = waiters.admit().expect("second");
        assert!(waiters.admit().is_none(), "a third is over the maximum");
        drop(a);
        let c = waiters.admit().expect("a place came free");
        drop((b, c));
        assert_eq!(waiting.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_loops_outcomes_become_their_answers() {
        let saved = reply_for(Some(NoteOutcome::Saved { index: 7 }));
        assert_eq!(saved.status_code().0, 200);
        let read = reply_for(Some(NoteOutcome::Read {
            text: "x".into(),
            index: 9,
        }));
        assert_eq!(read.status_code().0, 200);
        let down = reply_for(Some(NoteOutcome::Unavailable("no quorum".into())));
        assert_eq!(down.status_code().0, 503);
        assert_eq!(reply_for(None).status_code().0, 503, "a stopped loop");
    }

    #[test]
    fn a_form_field_is_found_and_decoded() {
        let body = b"other=1&textareaData=hello+w%C3%B6rld%21%0Aline+2&x=";
        assert_eq!(
            form_field(body, FORM_FIELD).expect("valid"),
            Some("hello wörld!\nline 2".into())
        );
        assert_eq!(
            form_field(b"textareaData", FORM_FIELD),
            Ok(Some(String::new()))
        );
        assert_eq!(
            form_field(b"textareaData=", FORM_FIELD),
            Ok(Some(String::new()))
        );
        assert_eq!(form_field(b"a=b", FORM_FIELD), Ok(None));
        assert_eq!(form_field(b"", FORM_FIELD), Ok(None));
    }

    #[test]
    fn a_broken_form_is_refused_with_a_reason() {
        for bad in [
            &b"textareaData=%"[..],
            b"textareaData=%G1",
            b"textareaData=%4",
        ] {
            let err = form_field(bad, FORM_FIELD).expect_err("bad percent-encoding");
            assert!(err.contains("percent"), "{err}");
        }
        let err = form_field(b"textareaData=%FF", FORM_FIELD).expect_err("not utf-8");
        assert!(err.contains("UTF-8"), "{err}");
    }
}
