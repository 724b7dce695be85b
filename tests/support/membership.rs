//! Membership changes as the tests make and check them, on loopback
//! (tests/membership.rs) and on the namespace hosts (tests/hosts): a signed
//! `POST /admin/member`, the `raftlb` CLI as an operator runs it, and the
//! configuration every live node reports.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::{get, wait_for, Cluster, CLIENT};

/// Bound on the wait for every node to report a configuration: a learner's
/// catch-up and two commits, on a busy two-core machine.
const VOTERS_SETTLE: Duration = Duration::from_secs(15);

/// The sender's clock in ms since the epoch, as `at` carries it.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// `POST /admin/member` to node `via` with `body` (its `at` set to now),
/// signed with the cluster key (or sent with `tag` when given), as `raftlb
/// member` does: (status, body), or the error when no answer came within
/// `limit` (a change may wait for a learner to catch up).
pub fn post_member(
    cluster: &Cluster,
    via: usize,
    mut body: serde_json::Value,
    tag: Option<&str>,
    limit: Duration,
) -> Result<(u16, String), ureq::Error> {
    body["at"] = json!(now_ms());
    let bytes = serde_json::to_vec(&body).expect("json");
    let tag = tag.map_or_else(|| cluster.keys().sign_body(&bytes), str::to_string);
    let agent = super::client(Duration::from_secs(2), limit);
    let mut resp = agent
        .post(&cluster.url(via, "/admin/member"))
        .header(raftlb::auth::AUTH_HEADER, &tag)
        .send(&bytes[..])?;
    let code = resp.status().as_u16();
    Ok((code, resp.body_mut().read_to_string().unwrap_or_default()))
}

/// [`post_member`] with a minute to answer, which it must.
pub fn member(
    cluster: &Cluster,
    via: usize,
    body: serde_json::Value,
    tag: Option<&str>,
) -> (u16, String) {
    post_member(cluster, via, body, tag, Duration::from_secs(60)).expect("the node answers")
}

/// `raftlb --nodes NODES ARGS...` with the cluster's nodes file (and so the
/// key beside it), as an operator runs it: (exit code, stdout, stderr).
pub fn cli(cluster: &Cluster, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(CLIENT)
        .args(["--nodes", &cluster.nodes_file()])
        .args(args)
        .output()
        .expect("run raftlb");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The configuration node i reports: (name, voter), in its order.
pub fn configuration(cluster: &Cluster, i: usize) -> Option<Vec<(String, bool)>> {
    let (code, body, _) = get(&cluster.url(i, "/status"))?;
    let status: serde_json::Value = serde_json::from_str(&body).ok()?;
    (code == 200).then(|| {
        status["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| {
                let name = n["id"].as_str().unwrap_or_default().to_string();
                (name, n["voter"].as_bool().unwrap_or(true))
            })
            .collect()
    })
}

/// Waits until every live node reports exactly `voters` as voters and no learner.
pub fn wait_for_voters(cluster: &Cluster, voters: &[&str]) {
    let mut want: Vec<String> = voters.iter().map(|v| v.to_string()).collect();
    want.sort();
    wait_for(
        &format!("voters {want:?} everywhere"),
        VOTERS_SETTLE,
        || {
            cluster
                .live()
                .iter()
                .all(|&i| {
                    configuration(cluster, i).is_some_and(|c| {
                        let mut names: Vec<String> = c
                            .iter()
                            .filter(|(_, v)| *v)
                            .map(|(n, _)| n.clone())
                            .collect();
                        names.sort();
                        names == want && c.iter().all(|(_, v)| *v)
                    })
                })
                .then_some(())
        },
    );
}
