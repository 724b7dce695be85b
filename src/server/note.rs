//! `GET /note`, `PUT /note` and `POST /note`: the replicated note.
//!
//! The handler checks the request (413 over 32 KiB, 400 for text that is not
//! UTF-8 or a form without `textareaData`), hands it to the event loop and waits
//! for its answer, which comes within `NOTE_TIMEOUT`: 200 once a write is
//! committed and applied here, or a linearizable read is served; 503 with what
//! is known otherwise. The wait is the whole point: a 200 is a promise.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tiny_http::{Method, Request};

use super::NodeHttp;
use crate::http::{self, Reply};
use crate::runtime::event_loop::LoopInput;
use crate::runtime::notes::{NoteOutcome, NOTE_TIMEOUT};
use crate::table::MAX_NOTE_BYTES;

/// The form field the original NoteRaft page posted.
pub const FORM_FIELD: &str = "textareaData";

/// A form body may be percent-encoded, up to three bytes per note byte.
const MAX_FORM_BYTES: usize = 3 * MAX_NOTE_BYTES + 1024;

/// The header that carries the log index of a write or read.
pub const INDEX_HEADER: &str = "X-Raftlb-Index";

/// How many note requests may wait for Raft at once on one node. A note request
/// holds its HTTP thread for up to `NOTE_TIMEOUT` (without a quorum, all of it);
/// prime requests must keep being served meanwhile (SPEC: they never need the
/// leader), so note requests may hold only part of the pool. Beyond it: 503.
pub struct NoteGate {
    max: usize,
    waiting: AtomicUsize,
}

impl NoteGate {
    /// A gate for a pool of `http_threads`: half of it, at least one.
    pub fn for_threads(http_threads: usize) -> NoteGate {
        NoteGate {
            max: (http_threads / 2).max(1),
            waiting: AtomicUsize::new(0),
        }
    }

    fn enter(&self) -> Option<NoteGateGuard<'_>> {
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        let guard = NoteGateGuard(self);
        (before < self.max).then_some(guard)
    }
}

/// One waiting note request; leaves the gate when dropped.
struct NoteGateGuard<'a>(&'a NoteGate);

impl Drop for NoteGateGuard<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

pub fn handle(node: &NodeHttp, request: &mut Request) -> Reply {
    match request.method() {
        Method::Get | Method::Head => read(node),
        Method::Put => match read_text(request) {
            Ok(text) => write(node, text),
            Err(reply) => reply,
        },
        _ => match read_form(request) {
            Ok(text) => write(node, text),
            Err(reply) => reply,
        },
    }
}

fn read(node: &NodeHttp) -> Reply {
    let (reply, answer) = crossbeam_channel::bounded(1);
    let deadline = Instant::now() + NOTE_TIMEOUT;
    ask(node, LoopInput::ReadNote { reply, deadline }, answer)
}

fn write(node: &NodeHttp, text: String) -> Reply {
    let (reply, answer) = crossbeam_channel::bounded(1);
    let deadline = Instant::now() + NOTE_TIMEOUT;
    let input = LoopInput::SetNote {
        text,
        reply,
        deadline,
    };
    ask(node, input, answer)
}

/// Hands `input` to the event loop and waits for its answer. The loop answers
/// every request by its deadline; the extra second here only guards against a
/// loop that stopped.
fn ask(
    node: &NodeHttp,
    input: LoopInput,
    answer: crossbeam_channel::Receiver<NoteOutcome>,
) -> Reply {
    let Some(_waiting) = node.note_gate.enter() else {
        return http::error(
            503,
            &format!(
                "too many note requests waiting on this node ({}); try again",
                node.note_gate.max
            ),
        );
    };
    if node.input.try_send(input).is_err() {
        return http::error(503, "node busy: request queue full, try again");
    }
    let outcome = answer
        .recv_timeout(NOTE_TIMEOUT + std::time::Duration::from_secs(1))
        .unwrap_or_else(|_| NoteOutcome::Unavailable("this node is stopping".into()));
    match outcome {
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
    fn the_note_gate_admits_half_the_pool_and_frees_a_place_on_drop() {
        let gate = NoteGate::for_threads(4);
        let a = gate.enter().expect("first");
        let b = gate.enter().expect("second");
        assert!(
            gate.enter().is_none(),
            "a third would hold over half the pool"
        );
        drop(a);
        let c = gate.enter().expect("a place came free");
        drop((b, c));
        assert_eq!(gate.waiting.load(Ordering::Relaxed), 0);
        assert!(NoteGate::for_threads(1).enter().is_some(), "at least one");
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
