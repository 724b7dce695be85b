//! The one place that builds ureq agents and makes plain HTTP calls, shared by
//! the client commands and the daemon.
//!
//! ureq 3 has no timeouts by default and turns 4xx/5xx into errors; every agent
//! built here has both timeouts set and hands back the status, so each caller
//! decides what a status means (a node's 503 is "try the next node", its 400 is
//! final). Bodies are read up to a limit: a node is trusted no further than that.

use std::time::Duration;

use ureq::Agent;

/// Largest response body read from a node (a `/status` with many servers is the
/// biggest legitimate answer, far below this).
pub(crate) const MAX_RESPONSE_BYTES: u64 = 1024 * 1024;

/// How long one call may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Until the TCP connection is up: small, so a dead host is given up quickly.
    pub connect: Duration,
    /// The whole call, from lookup to the last byte of the body.
    pub total: Duration,
}

/// A response of any status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// The body, lossily decoded: it is printed or parsed, never trusted.
    pub body: String,
    /// The `X-Raftlb-Server` header, when the node sent one: a prime answer
    /// names the server that computed it (`raftlb prime -v` shows it).
    pub server: Option<String>,
}

/// Builds an agent with both timeouts, statuses as values, no proxy and, when
/// `keep_alive` is false, no pooled connections.
///
/// The proxy is off because the nodes and workers are addressed directly: an
/// `http_proxy` variable in a user's shell must not reroute loopback traffic.
/// The daemon keeps its connections (keep-alive): a fresh connection per report
/// would leave a TIME_WAIT socket per report, and thousands of those hold
/// ephemeral ports a node may need to bind (34572 is in Linux's ephemeral
/// range). A report lost on a pooled socket to a restarted node is replaced by
/// the next one a second later.
pub fn agent(timeouts: Timeouts, keep_alive: bool) -> Agent {
    let mut config = Agent::config_builder()
        .timeout_connect(Some(timeouts.connect))
        .timeout_global(Some(timeouts.total))
        .http_status_as_error(false)
        .proxy(None)
        .max_redirects(0);
    if !keep_alive {
        config = config.max_idle_connections(0);
    }
    Agent::new_with_config(config.build())
}

/// Why a call got no answer (any status is an answer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// No connection could be made (refused, unreachable, connect timed out):
    /// the request was never sent, so sending it elsewhere cannot apply it twice.
    NotConnected(String),
    /// The call's time ran out after the connection was up: the request may
    /// have been delivered.
    TimedOut,
    /// Connecting, sending or reading the answer's head failed, for this reason
    /// (connection refused, ...).
    Failed(String),
    /// The answer's body could not be read (cut short, over the limit, ...).
    Body(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::TimedOut => f.write_str("timed out"),
            CallError::NotConnected(reason) | CallError::Failed(reason) => f.write_str(reason),
            CallError::Body(reason) => write!(f, "reading the answer: {reason}"),
        }
    }
}

impl std::error::Error for CallError {}

/// `GET url`.
pub fn get(agent: &Agent, url: &str) -> Result<Reply, CallError> {
    let response = agent.get(url).call().map_err(|e| describe(&e))?;
    read_reply(response)
}

/// `POST url` with a JSON body and, when given, its `X-Raftlb-Auth` tag
/// (`crate::auth`: reports and admin commands).
pub(crate) fn post_signed_json(
    agent: &Agent,
    url: &str,
    body: &[u8],
    tag: Option<&str>,
) -> Result<Reply, CallError> {
    let mut request = agent.post(url);
    if let Some(tag) = tag {
        request = request.header(crate::auth::AUTH_HEADER, tag);
    }
    send_body(request, "application/json", body)
}

/// `POST url` as `post_signed_json`, with extra headers (a node forwarding
/// an admin request to the leader marks it so).
pub(crate) fn post_signed_json_with(
    agent: &Agent,
    url: &str,
    body: &[u8],
    tag: &str,
    extra: &[(&str, &str)],
) -> Result<Reply, CallError> {
    let mut request = agent.post(url).header(crate::auth::AUTH_HEADER, tag);
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    send_body(request, "application/json", body)
}

/// `PUT url` with a text body.
pub(crate) fn put_text(agent: &Agent, url: &str, body: &[u8]) -> Result<Reply, CallError> {
    send_body(agent.put(url), "text/plain; charset=utf-8", body)
}

fn send_body(
    request: ureq::RequestBuilder<ureq::typestate::WithBody>,
    content_type: &str,
    body: &[u8],
) -> Result<Reply, CallError> {
    let response = request
        .header("content-type", content_type)
        .send(body)
        .map_err(|e| describe(&e))?;
    read_reply(response)
}

fn read_reply(mut response: ureq::http::Response<ureq::Body>) -> Result<Reply, CallError> {
    let status = response.status().as_u16();
    let server = response
        .headers()
        .get(crate::server::prime::SERVER_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(200).collect());
    let bytes = response
        .body_mut()
        .with_config()
        .limit(MAX_RESPONSE_BYTES)
        .read_to_vec()
        .map_err(|e| CallError::Body(describe(&e).to_string()))?;
    Ok(Reply {
        status,
        body: String::from_utf8_lossy(&bytes).into_owned(),
        server,
    })
}

/// A ureq error as a call error with a short lowercase phrase. The errors
/// ureq's TCP connector returns before a connection is up (see its
/// `is_addr_specific_error` and `Timeout::Connect`) are `NotConnected`.
fn describe(error: &ureq::Error) -> CallError {
    use std::io::ErrorKind;
    match error {
        ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => {
            CallError::NotConnected("connect timed out".to_string())
        }
        ureq::Error::Timeout(_) => CallError::TimedOut,
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => {
            CallError::NotConnected(lowercase_first(&error.to_string()))
        }
        ureq::Error::Io(e)
            if matches!(
                e.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
                    | ErrorKind::AddrNotAvailable
            ) =>
        {
            CallError::NotConnected(lowercase_first(&e.to_string()))
        }
        ureq::Error::Io(e) => CallError::Failed(lowercase_first(&e.to_string())),
        other => CallError::Failed(lowercase_first(&other.to_string())),
    }
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The base URL of a node: its resolved socket address, not the name in
/// nodes.txt, so that `localhost` means the IPv4 address the node binds (see
/// `nodes::resolve`) and no lookup is repeated per request.
pub(crate) fn node_base_url(node: &crate::nodes::NodeEntry) -> String {
    format!("http://{}", node.socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_phrases_start_lowercase() {
        assert_eq!(lowercase_first("Connection refused"), "connection refused");
        assert_eq!(lowercase_first(""), "");
    }

    #[test]
    fn a_refused_connection_is_a_reason_not_a_panic() {
        // Port 1 on loopback: nothing listens there in any sane test machine.
        let agent = agent(
            Timeouts {
                connect: Duration::from_millis(200),
                total: Duration::from_millis(500),
            },
            false,
        );
        let err = get(&agent, "http://127.0.0.1:1/health").expect_err("nothing listens");
        assert!(matches!(err, CallError::NotConnected(_)), "{err:?}");
        let err = err.to_string();
        assert!(!err.is_empty() && !err.contains('\n'), "{err}");
    }
}
