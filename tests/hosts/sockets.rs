//! The sockets of a process's network namespace, from /proc/PID/net/{tcp,udp}
//! and their IPv6 twins: what each host has bound and connected, so a test can
//! check that nothing sits on loopback or a wildcard address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One socket: its local address and, for TCP, its state.
#[derive(Debug)]
pub struct Socket {
    pub udp: bool,
    pub ip: IpAddr,
    pub port: u16,
    /// The kernel's state number: 0x0A is a listening TCP socket, 0x07 an
    /// unconnected UDP one.
    pub state: u8,
}

impl Socket {
    /// On `ip`, or not bound to any address yet (port 0, as an unbound
    /// socket shows).
    pub fn is_on(&self, ip: Ipv4Addr) -> bool {
        self.ip == IpAddr::V4(ip) || (self.port == 0 && self.ip.is_unspecified())
    }

    /// A TCP socket listening, or a UDP socket bound and not connected.
    pub fn listens(&self, udp: bool) -> bool {
        self.udp == udp && self.state == if udp { 0x07 } else { 0x0A }
    }
}

/// Every socket in `pid`'s network namespace.
pub fn of(pid: u32) -> Vec<Socket> {
    let mut sockets = Vec::new();
    for (file, udp) in [
        ("tcp", false),
        ("tcp6", false),
        ("udp", true),
        ("udp6", true),
    ] {
        let path = format!("/proc/{pid}/net/{file}");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let parsed = fields
                .get(1)
                .zip(fields.get(3))
                .and_then(|(local, state)| parse(local, state, udp));
            sockets.push(parsed.unwrap_or_else(|| panic!("{path}: cannot read line {line:?}")));
        }
    }
    sockets
}

/// `0100007F:870C` (IPv4) or 32 hex digits and a port (IPv6), as the kernel
/// prints the address's bytes in 32-bit words of the machine's byte order.
fn parse(local: &str, state: &str, udp: bool) -> Option<Socket> {
    let (hex, port) = local.split_once(':')?;
    let words: Vec<u32> = (0..hex.len() / 8)
        .map(|k| u32::from_str_radix(hex.get(k * 8..k * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some(Socket {
        udp,
        ip,
        port: u16::from_str_radix(port, 16).ok()?,
        state: u8::from_str_radix(state, 16).ok()?,
    })
}
