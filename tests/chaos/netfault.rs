//! Network faults between the nodes, with nftables in a network namespace of
//! the test's own: the test's thread leaves the machine's namespace for a new
//! one (with its own loopback), so every process it starts from then on, and
//! every rule it adds, lives there and vanishes with it. Nothing of the
//! machine's own network is touched.
//!
//! Only the nodes' UDP (Raft) is dropped: clients and daemons speak HTTP over
//! TCP on the same ports and keep reaching every node, which is what makes a
//! partition interesting: a cut-off leader is still asked for reads.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables); `make chaos-deps` installs
//! the two. Delay is not done: the kernels this was built on have no netem.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::Duration;

const TABLE: &str = "inet raftlb_chaos";

pub struct NetFaults;

impl NetFaults {
    /// Moves the calling thread into a new network namespace with loopback up
    /// and an empty nftables chain on input, and checks that a drop rule drops.
    /// Errs with the reason when that cannot be done; the thread is then back in
    /// the namespace it started in.
    pub fn enter() -> Result<NetFaults, String> {
        if std::env::var("CHAOS_NET").is_ok_and(|v| v == "0") {
            return Err("switched off with CHAOS_NET=0".into());
        }
        // SAFETY: geteuid(2) has no preconditions and touches no memory of ours.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root (a network namespace needs CAP_SYS_ADMIN)".into());
        }
        for tool in ["ip", "nft"] {
            let found = Command::new(tool)
                .arg("-V")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !found {
                return Err(format!("`{tool}` not found (make chaos-deps installs it)"));
            }
        }
        let home = std::fs::File::open("/proc/thread-self/ns/net")
            .map_err(|e| format!("open /proc/thread-self/ns/net: {e}"))?;
        // SAFETY: unshare(2) takes a flag word; it changes only this thread's
        // namespace, which the rest of this test's thread is written for.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            ));
        }
        let set_up = run("ip", &["link", "set", "lo", "up"])
            .and_then(|()| {
                nft(&format!(
                    "add table {TABLE}\n\
                     add chain {TABLE} input {{ type filter hook input priority 0; policy accept; }}\n"
                ))
            })
            .and_then(|()| NetFaults.probe());
        if let Err(e) = set_up {
            // SAFETY: setns(2) with a namespace fd we opened and still hold.
            let back = unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(
                back, 0,
                "could not return to the machine's network namespace"
            );
            return Err(e);
        }
        Ok(NetFaults)
    }

    /// A drop rule between two sockets drops, and clearing it lets datagrams
    /// through again.
    fn probe(&self) -> Result<(), String> {
        let bind = || UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("probe bind: {e}"));
        let (a, b) = (bind()?, bind()?);
        let port = |s: &UdpSocket| s.local_addr().map(|a| a.port()).unwrap_or(0);
        b.set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(|e| e.to_string())?;
        let delivered = |a: &UdpSocket, b: &UdpSocket| {
            let _ = a.send_to(b"probe", b.local_addr().expect("bound"));
            b.recv(&mut [0; 16]).is_ok()
        };
        nft(&format!(
            "add rule {TABLE} input udp dport {} drop\n",
            port(&b)
        ))?;
        let dropped = !delivered(&a, &b);
        self.clear()?;
        let passed = delivered(&a, &b);
        match (dropped, passed) {
            (true, true) => Ok(()),
            (false, _) => Err("an nftables drop rule did not drop".into()),
            (true, false) => Err("loopback lost a datagram with no rule".into()),
        }
    }

    /// Cuts `port` off: no Raft datagram to or from it.
    pub fn isolate(&self, port: u16) -> Result<(), String> {
        nft(&format!(
            "add rule {TABLE} input udp dport {port} drop\n\
             add rule {TABLE} input udp sport {port} drop\n"
        ))
    }

    /// No Raft datagram to `port`: it sends, and hears no one.
    #[allow(dead_code)] // tests/membership.rs uses it
    pub fn deafen(&self, port: u16) -> Result<(), String> {
        nft(&format!("add rule {TABLE} input udp dport {port} drop\n"))
    }

    /// No Raft datagram between the two sides, either way.
    pub fn split(&self, one: &[u16], other: &[u16]) -> Result<(), String> {
        let (a, b) = (set(one), set(other));
        nft(&format!(
            "add rule {TABLE} input udp sport {a} udp dport {b} drop\n\
             add rule {TABLE} input udp sport {b} udp dport {a} drop\n"
        ))
    }

    /// Drops `percent` of the datagrams to `ports`, at random.
    pub fn loss(&self, ports: &[u16], percent: u64) -> Result<(), String> {
        nft(&format!(
            "add rule {TABLE} input udp dport {} numgen random mod 100 < {percent} drop\n",
            set(ports)
        ))
    }

    /// Every fault off.
    pub fn clear(&self) -> Result<(), String> {
        nft(&format!("flush chain {TABLE} input\n"))
    }
}

/// `{ 1, 2, 3 }`, nftables' anonymous set.
fn set(ports: &[u16]) -> String {
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!("{{ {} }}", list.join(", "))
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    crate::support::run_tool(std::path::Path::new(program), args, "").map(|_| ())
}

/// Runs an nftables script (`nft -f -`).
fn nft(script: &str) -> Result<(), String> {
    crate::support::run_tool(std::path::Path::new("nft"), &["-f", "-"], script).map(|_| ())
}
