//! What keeps a visitor's browser from being used against a node (SPEC, the
//! `PUT /note` row and "Every request").
//!
//! - DNS rebinding: a page from `evil.example` whose name is made to resolve
//!   to 127.0.0.1 talks to a node as same-origin, but its requests carry
//!   `Host: evil.example`. So every request's `Host` must name this node:
//!   `localhost`, an IP literal, or the host of this node's address in
//!   nodes.txt; else 421. An HTTP/1.1 request without `Host` is 400 (RFC 9112).
//! - Cross-site writes: any page can make a browser POST a form to a node. So a
//!   note write is refused 403 when `Sec-Fetch-Site` says `cross-site`, or when
//!   an `Origin` is sent that is neither this request's own origin nor a node of
//!   the cluster's (the page fails over to the other nodes). No `Origin` at all
//!   (curl, the CLI, the daemon) is not a browser's cross-site request.

use std::net::{IpAddr, Ipv6Addr};

use crate::http::{self, Reply, Request};
use crate::nodes::Nodes;
use crate::raft::NodeId;

/// What a node accepts as its own names.
pub struct Guard {
    /// The host of this node's address in nodes.txt (`localhost`, a name, an IP).
    own_host: String,
    /// `http://HOST:PORT` of every node in nodes.txt, as written there.
    node_origins: Vec<String>,
}

impl Guard {
    pub fn new(nodes: &Nodes, me: NodeId) -> Guard {
        let own = nodes
            .get(me)
            .map_or("localhost", |entry| entry.addr.as_str());
        let all: Vec<&str> = nodes.entries().iter().map(|e| e.addr.as_str()).collect();
        Guard::of_addresses(own, &all)
    }

    /// From this node's `HOST:PORT` and every node's, as nodes.txt writes them.
    fn of_addresses(own: &str, all: &[&str]) -> Guard {
        Guard {
            own_host: host_part(own).unwrap_or("localhost").to_string(),
            node_origins: all.iter().map(|addr| format!("http://{addr}")).collect(),
        }
    }

    /// 400 for an HTTP/1.1 request without `Host`, 421 for a `Host` that is
    /// not a name of this node.
    pub(crate) fn check_host(&self, request: &Request) -> Result<(), Reply> {
        let Some(host) = request.header("host") else {
            if request.minor_version() == 0 {
                return Ok(());
            }
            return Err(http::error(400, "an HTTP/1.1 request needs a Host header"));
        };
        let allowed = host_part(host).is_some_and(|name| {
            name.eq_ignore_ascii_case("localhost")
                || name.parse::<IpAddr>().is_ok()
                || name.eq_ignore_ascii_case(&self.own_host)
        });
        if allowed {
            return Ok(());
        }
        Err(http::error(
            421,
            &format!(
                "host {:?} is not this node: use localhost, an IP address or {}",
                super::truncate(host),
                self.own_host
            ),
        ))
    }

    /// Whether `origin` is another node's page (`http://` + an address of
    /// nodes.txt): the one cross-origin caller of `/note`, when its own node
    /// does not answer and the page reads and saves through this one.
    pub(crate) fn is_node_origin(&self, origin: &str) -> bool {
        self.node_origins
            .iter()
            .any(|node| origin.eq_ignore_ascii_case(node))
    }

    /// 403 for a note write a browser sends from another site.
    pub(crate) fn check_write_origin(&self, request: &Request) -> Result<(), Reply> {
        let fetch_site = request.header("sec-fetch-site");
        if fetch_site.is_some_and(|site| site.eq_ignore_ascii_case("cross-site")) {
            return Err(http::error(403, "cross-site note writes are refused"));
        }
        let Some(origin) = request.header("origin") else {
            return Ok(());
        };
        let same_origin = request
            .header("host")
            .is_some_and(|host| same_text(origin, "http://", host));
        if same_origin || self.is_node_origin(origin) {
            return Ok(());
        }
        Err(http::error(
            403,
            &format!(
                "note writes from origin {:?} are refused: only this node's page may write",
                super::truncate(origin)
            ),
        ))
    }
}

/// Whether `text` is `prefix` followed by `rest`, ignoring ASCII case.
fn same_text(text: &str, prefix: &str, rest: &str) -> bool {
    text.len() == prefix.len() + rest.len()
        && text
            .get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        && text
            .get(prefix.len()..)
            .is_some_and(|r| r.eq_ignore_ascii_case(rest))
}

/// The host of `HOST[:PORT]`: `[v6]` loses its brackets, and an unbracketed
/// name with more than one colon is no host at all.
fn host_part(host_port: &str) -> Option<&str> {
    if let Some(rest) = host_port.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(is_port);
        return (port_ok && inside.parse::<Ipv6Addr>().is_ok()).then_some(inside);
    }
    match host_port.split_once(':') {
        None => Some(host_port),
        Some((host, port)) if is_port(port) => Some(host),
        Some(_) => None,
    }
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse_head, Request};

    fn guard() -> Guard {
        Guard::of_addresses("node-a.lan:34572", &["node-a.lan:34572", "127.0.0.1:34573"])
    }

    fn request(head: &str) -> Request {
        let text = format!("{head}\r\n\r\n");
        let (head, _) = parse_head(text.as_bytes())
            .expect("valid head")
            .expect("complete head");
        let addr = "127.0.0.1:1".parse().expect("valid address");
        Request::new(head, Vec::new(), addr)
    }

    #[test]
    fn host_parts_strip_the_port_and_brackets() {
        assert_eq!(host_part("a:80"), Some("a"));
        assert_eq!(host_part("a"), Some("a"));
        assert_eq!(host_part("[::1]:80"), Some("::1"));
        assert_eq!(host_part("[::1]"), Some("::1"));
        assert_eq!(host_part("::1"), None);
        assert_eq!(host_part("[nope]:80"), None);
        assert_eq!(host_part("a:x"), None);
    }

    #[test]
    fn hosts_of_this_node_pass_and_others_are_421() {
        let guard = guard();
        for host in [
            "localhost:1",
            "LOCALHOST",
            "127.0.0.7:9",
            "[::1]:9",
            "node-a.lan:34572",
        ] {
            let r = request(&format!("GET / HTTP/1.1\r\nHost: {host}"));
            assert!(guard.check_host(&r).is_ok(), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:34572",
            "node-b.lan",
            "::1",
            "",
        ] {
            let r = request(&format!("GET / HTTP/1.1\r\nHost: {host}"));
            let status = guard
                .check_host(&r)
                .map(|_| 0)
                .unwrap_or_else(|e| e.status_code());
            assert_eq!(status, 421, "{host}");
        }
    }

    #[test]
    fn a_missing_host_is_400_in_http_1_1_only() {
        let guard = guard();
        let status = guard
            .check_host(&request("GET / HTTP/1.1"))
            .map(|_| 0)
            .unwrap_or_else(|e| e.status_code());
        assert_eq!(status, 400);
        assert!(guard.check_host(&request("GET / HTTP/1.0")).is_ok());
    }

    #[test]
    fn writes_from_another_site_are_403() {
        let guard = guard();
        let allowed = [
            "PUT /note HTTP/1.1\r\nHost: localhost:34572",
            "PUT /note HTTP/1.1\r\nHost: localhost:34572\r\nOrigin: http://localhost:34572",
            "PUT /note HTTP/1.1\r\nHost: localhost:34572\r\nOrigin: http://127.0.0.1:34573",
            "PUT /note HTTP/1.1\r\nHost: x\r\nOrigin: http://x\r\nSec-Fetch-Site: same-origin",
        ];
        for head in allowed {
            assert!(guard.check_write_origin(&request(head)).is_ok(), "{head}");
        }
        let refused = [
            "POST /note HTTP/1.1\r\nHost: localhost:34572\r\nOrigin: http://evil.example",
            "POST /note HTTP/1.1\r\nHost: localhost:34572\r\nOrigin: null",
            "POST /note HTTP/1.1\r\nHost: localhost:34572\r\nOrigin: https://localhost:34572",
            "POST /note HTTP/1.1\r\nHost: localhost:34572\r\nSec-Fetch-Site: cross-site",
        ];
        for head in refused {
            let status = guard
                .check_write_origin(&request(head))
                .map(|_| 0)
                .unwrap_or_else(|e| e.status_code());
            assert_eq!(status, 403, "{head}");
        }
    }
}
