//! The bench's own small HTTP client, for what is not a load (the load is
//! `raftlb bench`): polling etcd's status and the failover trials' client loops.
//! The same client and the same timeouts serve both sides of every comparison.

use std::time::Duration;

/// A keep-alive agent: statuses as values, per-phase timeouts. Not a global
/// timeout: with one, ureq resolves the host on a new thread for every call,
/// and a 5 ms polling loop would time its own thread spawns.
pub fn agent(response_timeout: Duration) -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_millis(300)))
            .timeout_send_request(Some(response_timeout))
            .timeout_recv_response(Some(response_timeout))
            .timeout_recv_body(Some(response_timeout))
            .http_status_as_error(false)
            .build(),
    )
}

/// `method url` with `body`: (status, body), or None when nothing answered.
pub fn send(agent: &ureq::Agent, method: &str, url: &str, body: &[u8]) -> Option<(u16, String)> {
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .body(body.to_vec())
        .ok()?;
    let mut resp = agent.run(request).ok()?;
    let code = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().ok()?;
    Some((code, body))
}

/// `GET url`: (status, body), or None when nothing answered.
pub fn get(agent: &ureq::Agent, url: &str) -> Option<(u16, String)> {
    let mut resp = agent.get(url).call().ok()?;
    let code = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().ok()?;
    Some((code, body))
}
