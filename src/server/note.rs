//! `GET /note`, `PUT /note` and `POST /note`: the replicated note.
//!
//! The server has already refused a body over the route's limit (413 over
//! 32 KiB for `PUT`, over `MAX_FORM_BYTES` for the form); the handler checks
//! the rest (400 for text that is not UTF-8 or a form without `textareaData`,
//! 413 for a form whose decoded note is over 32 KiB) and hands it to the event
//! loop, whose answer comes within `NOTE_TIMEOUT`: 200 once a write is
//! committed and applied here, or a linearizable read is served; 503 with what
//! is known otherwise. The wait is the whole point: a 200 is a promise.
//!
//! The wait happens on the request's own connection thread. At most
//! [`WAITING_MAX`] note requests wait at once ([`Admission`]); beyond it, 503 at
//! once, so that requests waiting out a lost quorum cannot pile up without end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::NodeHttp;
use crate::http::{self, Reply, Request};
use crate::runtime::{NodeHandle, NoteOutcome, NOTE_TIMEOUT};
use crate::table::MAX_NOTE_BYTES;

/// The form field the original NoteRaft page posted.
pub(crate) const FORM_FIELD: &str = "textareaData";

/// A form body may be percent-encoded, up to three bytes per note byte.
pub(crate) const MAX_FORM_BYTES: usize = 3 * MAX_NOTE_BYTES + 1024;

/// The header that carries the log index of a write or read.
pub(crate) const INDEX_HEADER: &str = "X-Raftlb-Index";

/// How many note requests may wait for Raft at once on one node; beyond it,
/// 503 at once. 64 writers at a time is what the benchmark asks of a leader.
pub const WAITING_MAX: usize = 64;

/// Counts the note requests waiting for the event loop's answer.
pub struct Admission {
    waiting: AtomicUsize,
    max: usize,
}

/// One admitted note request; dropping it gives the place back.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub fn new(max: usize) -> Admission {
        Admission {
            waiting: AtomicUsize::new(0),
            max,
        }
    }

    /// A place for one more waiting request, or None when all are taken.
    fn admit(&self) -> Option<Slot<'_>> {
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(&self.waiting);
        (before < self.max).then_some(slot)
    }
}

pub fn handle(node: &NodeHttp, request: &Request) -> Reply {
    let text = match request.method() {
        "GET" | "HEAD" => return read(node),
        "PUT" => read_text(request),
        _ => read_form(request),
    };
    match text {
        Ok(text) if request.method() == "POST" && wants_html(request) => {
            back_to_the_page(write(node, text))
        }
        Ok(text) => write(node, text),
        Err(reply) => reply,
    }
}

/// Whether the client asked for a page (a browser's form submission sends
/// `Accept: text/html,...`; curl and the CLI do not).
fn wants_html(request: &Request) -> bool {
    request
        .header("Accept")
        .is_some_and(|accept| accept.to_ascii_lowercase().contains("text/html"))
}

/// A saved form write sends the browser back to the page (303 See Other, so a
/// reload does not post the form again); an error stays as it is, its one-line
/// reason shown to the person.
fn back_to_the_page(reply: Reply) -> Reply {
    if reply.status_code() != 200 {
        return reply;
    }
    let mut see_other = http::with_header(http::text(303, "saved; see /\n"), "Location", "/");
    if let Some(index) = reply.header(INDEX_HEADER) {
        see_other = http::with_header(see_other, INDEX_HEADER, index);
    }
    see_other
}

fn read(node: &NodeHttp) -> Reply {
    wait_in_line(node, |handle| {
        handle.read_note(Instant::now() + NOTE_TIMEOUT)
    })
}

fn write(node: &NodeHttp, text: String) -> Reply {
    wait_in_line(node, |handle| {
        handle.write_note(text, Instant::now() + NOTE_TIMEOUT)
    })
}

/// Takes a place among the requests waiting for Raft, then asks the node and
/// waits for its answer. The place is given up before the answer is written
/// (when this returns): a client that sends its next request the moment the
/// answer arrives must find it free (seen otherwise: 64 closed-loop writers
/// turned away with 503 "too many note requests" a third of the time).
fn wait_in_line(node: &NodeHttp, ask: impl FnOnce(&NodeHandle) -> NoteOutcome) -> Reply {
    let admission = &node.note_admission;
    let Some(slot) = admission.admit() else {
        return http::error(
            503,
            &format!(
                "too many note requests waiting on this node ({}); try again",
                admission.max
            ),
        );
    };
    let outcome = ask(&node.handle);
    drop(slot);
    reply_for(outcome)
}

/// The HTTP answer to the loop's outcome.
fn reply_for(outcome: NoteOutcome) -> Reply {
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

/// `PUT /note`: the body is the note (the server kept it within 32 KiB).
fn read_text(request: &Request) -> Result<String, Reply> {
    String::from_utf8(request.body().to_vec()).map_err(|e| {
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
fn read_form(request: &Request) -> Result<String, Reply> {
    let text = form_field(request.body(), FORM_FIELD)
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
    // A browser sends a textarea's line breaks as CRLF (HTML's form
    // submission); the note keeps them as typed, "\n", as PUT does.
    let text = text.replace("\r\n", "\n");
    if text.len() > MAX_NOTE_BYTES {
        return Err(http::error(
            413,
            &format!("the note is {} bytes, over {MAX_NOTE_BYTES}", text.len()),
        ));
    }
    Ok(text)
}

/// The value of field `name` in an urlencoded form body (the first one), decoded.
fn form_field(body: &[u8], name: &str) -> Result<Option<String>, String> {
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
                    // Two hex digits, nothing else: from_str_radix alone
                    // would take a sign ("%+1").
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
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
        let admission = Admission::new(2);
        let a = admission.admit().expect("first");
        let b = admission.admit().expect("second");
        assert!(admission.admit().is_none(), "a third is over the maximum");
        drop(a);
        let c = admission.admit().expect("a place came free");
        drop((b, c));
        assert_eq!(admission.waiting.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_loops_outcomes_become_their_answers() {
        let saved = reply_for(NoteOutcome::Saved { index: 7 });
        assert_eq!(saved.status_code(), 200);
        let read = reply_for(NoteOutcome::Read {
            text: "x".into(),
            index: 9,
        });
        assert_eq!(read.status_code(), 200);
        let down = reply_for(NoteOutcome::Unavailable("no quorum".into()));
        assert_eq!(down.status_code(), 503);
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
            b"textareaData=%+1",
            b"textareaData=%-1",
        ] {
            let err = form_field(bad, FORM_FIELD).expect_err("bad percent-encoding");
            assert!(err.contains("percent"), "{err}");
        }
        let err = form_field(b"textareaData=%FF", FORM_FIELD).expect_err("not utf-8");
        assert!(err.contains("UTF-8"), "{err}");
    }
}
