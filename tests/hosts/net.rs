//! Hosts for the test: a network namespace per host, each with one address on
//! a bridge the test creates (a veth pair per host), and the machine itself at
//! `.1` on the same bridge so the test reaches every host from its own
//! namespace. Names carry the test process's pid and the subnet is derived from
//! it and checked free, so two runs at once cannot collide. Dropping the
//! [`Net`] deletes the namespaces, veths and bridge, also when a test panics.
//!
//! Faults are per link, with nftables inside the sending host's namespace:
//! every host has a chain per other host (`to_<name>`), jumped to for packets
//! to that host's address. A [`Link`] fault fills that chain (drop all, or a
//! random share); healing flushes it. The rules count what they drop, so a
//! test can check that a fault really cut something.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use crate::support::Placement;

/// The nftables table of the faults, in every host's namespace.
const TABLE: &str = "inet raftlb_hosts";

/// How many subnets are tried when the first one is taken.
const SUBNET_TRIES: u32 = 32;

/// One host: a namespace and its address.
pub struct Host {
    /// The test's name for it ("A", "worker-1").
    pub name: String,
    /// The network namespace (`ip netns` name).
    pub ns: String,
    /// The root namespace's end of its veth pair, on the bridge.
    veth: String,
    pub ip: Ipv4Addr,
}

/// The bridge and the hosts on it.
pub struct Net {
    bridge: String,
    /// The machine's own address on the bridge.
    pub root_ip: Ipv4Addr,
    pub hosts: Vec<Host>,
    ip_tool: PathBuf,
    nft_tool: PathBuf,
}

/// Why the hosts cannot be made here: the test says so and skips.
pub struct Unavailable(pub String);

impl Net {
    /// Creates a bridge and one host per name. Errs with [`Unavailable`] when
    /// this machine cannot (not root, no `ip` or `nft`, no bridge support);
    /// panics when a later step fails, after deleting what it made.
    pub fn create(names: &[&str]) -> Result<Net, Unavailable> {
        // SAFETY: geteuid(2) has no preconditions and touches no memory of ours.
        if unsafe { libc::geteuid() } != 0 {
            return Err(Unavailable(
                "not root (network namespaces, veths and a bridge need CAP_NET_ADMIN)".into(),
            ));
        }
        let ip_tool = find_tool("ip").ok_or_else(|| {
            Unavailable("`ip` (iproute2) not found (make chaos-deps installs it)".into())
        })?;
        let nft_tool = find_tool("nft").ok_or_else(|| {
            Unavailable("`nft` (nftables) not found (make chaos-deps installs it)".into())
        })?;
        let pid = std::process::id();
        let subnet = free_subnet(&ip_tool, pid)?;
        let bridge = format!("rlbh{pid}");
        let mut net = Net {
            bridge: bridge.clone(),
            root_ip: Ipv4Addr::new(subnet[0], subnet[1], subnet[2], 1),
            hosts: Vec::new(),
            ip_tool,
            nft_tool,
        };
        // The first step tells whether this kernel can: a failure is a skip.
        net.ip(&["link", "add", &bridge, "type", "bridge"])
            .map_err(|e| Unavailable(format!("cannot create a bridge: {e}")))?;
        let root = format!("{}/24", net.root_ip);
        net.ip(&["addr", "add", &root, "dev", &bridge])
            .and_then(|()| net.ip(&["link", "set", &bridge, "up"]))
            .unwrap_or_else(|e| panic!("set up bridge {bridge}: {e}"));
        for (k, name) in names.iter().enumerate() {
            let host_byte = u8::try_from(10 + k).expect("fewer than 245 hosts");
            let host = Host {
                name: name.to_string(),
                ns: format!("raftlb-h{pid}-{name}"),
                veth: format!("rlbh{pid}v{k}"),
                ip: Ipv4Addr::new(subnet[0], subnet[1], subnet[2], host_byte),
            };
            // Listed first, so that a failure half-way is cleaned up by the drop.
            net.hosts.push(host);
            net.add_host(&net.hosts[k])
                .unwrap_or_else(|e| panic!("set up host {name}: {e}"));
        }
        for k in 0..net.hosts.len() {
            net.add_fault_chains(k)
                .unwrap_or_else(|e| panic!("nftables in host {}: {e}", net.hosts[k].name));
        }
        Ok(net)
    }

    fn add_host(&self, host: &Host) -> Result<(), String> {
        let (ns, veth) = (host.ns.as_str(), host.veth.as_str());
        let addr = format!("{}/24", host.ip);
        self.ip(&["netns", "add", ns])?;
        self.ip(&[
            "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])?;
        self.ip(&["link", "set", veth, "master", &self.bridge, "up"])?;
        self.ip(&["-n", ns, "addr", "add", &addr, "dev", "eth0"])?;
        self.ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        self.ip(&["-n", ns, "link", "set", "lo", "up"])
    }

    /// Host k's table: an output chain that jumps, per other host, to an empty
    /// chain of that host's name, where a link's fault goes.
    fn add_fault_chains(&self, k: usize) -> Result<(), String> {
        let mut script = format!(
            "add table {TABLE}\n\
             add chain {TABLE} output {{ type filter hook output priority 0; policy accept; }}\n"
        );
        for (j, other) in self.hosts.iter().enumerate() {
            if j != k {
                let chain = chain_to(&other.name);
                script += &format!(
                    "add chain {TABLE} {chain}\nadd rule {TABLE} output ip daddr {} jump {chain}\n",
                    other.ip
                );
            }
        }
        self.nft(&self.hosts[k].ns, &script).map(|_| ())
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host named {name}"))
    }

    /// The command line that runs a program in host `name`'s namespace, to
    /// be followed by the program and its arguments: `ip netns exec NS`,
    /// which execs the program, so the child's pid is the program's.
    pub fn runner(&self, name: &str) -> Vec<String> {
        let ns = self.host(name).ns.clone();
        let ip_tool = self.ip_tool.display().to_string();
        vec![ip_tool, "netns".into(), "exec".into(), ns]
    }

    /// Where `tests/support`'s `Cluster` starts each program: node i on host
    /// `nodes[i]`, worker i on `workers[i]`, its daemon on `daemons[i]`.
    pub fn placement(&self, nodes: &[&str], workers: &[&str], daemons: &[&str]) -> Placement {
        let on = |name: &&str| (IpAddr::V4(self.host(name).ip), self.runner(name));
        Placement {
            nodes: nodes.iter().map(on).collect(),
            workers: workers.iter().map(on).collect(),
            daemons: daemons.iter().map(|name| self.runner(name)).collect(),
        }
    }

    /// The link from host `from` to host `to`, one way.
    pub fn link<'a>(&'a self, from: &str, to: &str) -> Link<'a> {
        assert_ne!(from, to, "a link joins two hosts");
        Link {
            net: self,
            from: self.host(from),
            to: self.host(to),
        }
    }

    /// Every fault off, on every link.
    pub fn heal_all(&self) {
        for from in &self.hosts {
            for to in self.hosts.iter().filter(|h| h.name != from.name) {
                self.link(&from.name, &to.name).heal();
            }
        }
    }

    fn ip(&self, args: &[&str]) -> Result<(), String> {
        run(&self.ip_tool, args)
    }

    /// Runs an nftables script in namespace `ns` (`ip netns exec NS nft -f -`).
    fn nft(&self, ns: &str, script: &str) -> Result<String, String> {
        let nft = self.nft_tool.display().to_string();
        let args = ["netns", "exec", ns, &nft, "-f", "-"];
        crate::support::run_tool(&self.ip_tool, &args, script)
    }
}

impl Drop for Net {
    /// Deletes every veth (its peer goes with it), namespace and the bridge,
    /// whatever state the test left them in; what fails is reported, not
    /// panicked on (a panic in a drop during a panic aborts).
    fn drop(&mut self) {
        for host in &self.hosts {
            let _ = self.ip(&["link", "del", &host.veth]);
            if let Err(e) = self.ip(&["netns", "del", &host.ns]) {
                eprintln!("hosts: cannot delete namespace {}: {e}", host.ns);
            }
        }
        if let Err(e) = self.ip(&["link", "del", &self.bridge]) {
            eprintln!("hosts: cannot delete bridge {}: {e}", self.bridge);
        }
    }
}

/// One direction between two hosts: what `from` sends to `to`.
pub struct Link<'a> {
    net: &'a Net,
    from: &'a Host,
    to: &'a Host,
}

impl Link<'_> {
    /// Every packet from `from` to `to` is dropped (`to` no longer hears `from`).
    pub fn drop_all(&self) {
        self.set("counter drop");
    }

    /// `percent` of the packets from `from` to `to` are dropped, at random.
    pub fn loss(&self, percent: u32) {
        assert!((1..100).contains(&percent), "loss of {percent} %");
        self.set(&format!("numgen random mod 100 < {percent} counter drop"));
    }

    /// This link's fault off.
    pub fn heal(&self) {
        let script = format!("flush chain {TABLE} {}\n", chain_to(&self.to.name));
        self.net
            .nft(&self.from.ns, &script)
            .unwrap_or_else(|e| panic!("heal {}: {e}", self.describe()));
    }

    /// Packets this link's fault dropped since it was set.
    pub fn dropped(&self) -> u64 {
        let script = format!("list chain {TABLE} {}\n", chain_to(&self.to.name));
        let text = self
            .net
            .nft(&self.from.ns, &script)
            .unwrap_or_else(|e| panic!("read {}'s counter: {e}", self.describe()));
        text.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    pub fn describe(&self) -> String {
        format!("link {} -> {}", self.from.name, self.to.name)
    }

    fn set(&self, rule: &str) {
        let chain = chain_to(&self.to.name);
        let script = format!("flush chain {TABLE} {chain}\nadd rule {TABLE} {chain} {rule}\n");
        self.net
            .nft(&self.from.ns, &script)
            .unwrap_or_else(|e| panic!("fault on {}: {e}", self.describe()));
    }
}

/// The chain holding the faults of packets to host `name`.
fn chain_to(name: &str) -> String {
    format!("to_{}", name.replace('-', "_"))
}

/// `10.x.y` for a /24 nobody on this machine uses: derived from `pid`, so that
/// parallel runs pick different ones, and checked against every IPv4 address
/// and route here, moving on when taken.
fn free_subnet(ip_tool: &Path, pid: u32) -> Result<[u8; 3], Unavailable> {
    let used = [
        vec!["-4", "-o", "addr", "show"],
        vec!["-4", "route", "show", "table", "all"],
    ]
    .iter()
    .map(|args| output(ip_tool, args))
    .collect::<Result<Vec<String>, String>>()
    .map_err(|e| Unavailable(format!("cannot list this machine's addresses: {e}")))?
    .join("\n");
    let used: Vec<(u32, u32)> = used.split_whitespace().filter_map(network).collect();
    for k in 0..SUBNET_TRIES {
        let n = pid.wrapping_add(k * 7919);
        let subnet = [10, 100 + (n % 100) as u8, ((n / 100) % 256) as u8];
        let ours = u32::from(Ipv4Addr::new(subnet[0], subnet[1], subnet[2], 0));
        let overlaps = used.iter().any(|&(addr, len)| {
            let shorter = len.min(24);
            let mask = u32::MAX.checked_shl(32 - shorter).unwrap_or(0);
            addr & mask == ours & mask
        });
        if !overlaps {
            return Ok(subnet);
        }
    }
    Err(Unavailable(format!(
        "no free 10.x.y.0/24 among {SUBNET_TRIES} tried"
    )))
}

/// `A.B.C.D/LEN` or `A.B.C.D` (a /32) as an address and a prefix length.
fn network(word: &str) -> Option<(u32, u32)> {
    let (addr, len) = word.split_once('/').unwrap_or((word, "32"));
    let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
    Some((u32::from(addr.parse::<Ipv4Addr>().ok()?), len))
}

/// A system tool from PATH or the sbin directories (a user's PATH may lack them).
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn run(program: &Path, args: &[&str]) -> Result<(), String> {
    output(program, args).map(|_| ())
}

fn output(program: &Path, args: &[&str]) -> Result<String, String> {
    crate::support::run_tool(program, args, "")
}
