//! Hosts on one machine: each node in its own network namespace with its own address on
//! a Linux bridge, faults applied with iptables inside the namespaces (nothing leaks to
//! the host). Names carry the test process id (`smc<pid>`), leftovers of a crashed run
//! with the same names are removed first, and everything is removed on drop.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// One network at a time per test process: the names carry only the pid, and three nodes
/// per scenario are what two cores can run without timing noise.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `program args`, returning whether it succeeded (output discarded).
fn run(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `program args`, panicking with its stderr when it fails.
fn must(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A bridge and `n` namespaces `…n1..nN` with addresses `10.231.X.11..`.
pub struct Net {
    prefix: String,
    bridge: String,
    subnet: u8,
    hosts: usize,
    forward_rules: Vec<Vec<String>>,
    /// Held until the network is removed (declared last: dropped after `Drop::drop`).
    _turn: MutexGuard<'static, ()>,
}

impl Net {
    /// Sets the network up, or `None` (printed) when namespaces are unavailable outside
    /// CI. Under `CI=true` that is a failure.
    pub fn new(hosts: usize) -> Option<Self> {
        let pid = std::process::id();
        let prefix = format!("smc{}", pid % 100_000);
        let subnet = u8::try_from(20 + pid % 200).expect("subnet");
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let mut net = Self {
            bridge: format!("{prefix}b"),
            prefix,
            subnet,
            hosts,
            forward_rules: Vec::new(),
            _turn: turn,
        };
        net.remove();
        if !run("ip", &["netns", "add", &net.ns(1)]) {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "CI=true but network namespaces are unavailable (root and iproute2 are required)"
            );
            eprintln!("SKIPPED: cannot create network namespaces (needs root)");
            return None;
        }
        run("ip", &["netns", "del", &net.ns(1)]);
        net.build();
        Some(net)
    }

    fn build(&mut self) {
        let bridge = self.bridge.clone();
        must("ip", &["link", "add", &bridge, "type", "bridge"]);
        let host_cidr = format!("{}/24", self.host_addr());
        must("ip", &["addr", "add", &host_cidr, "dev", &bridge]);
        must("ip", &["link", "set", &bridge, "up"]);
        for i in 1..=self.hosts {
            let (ns, outer, inner) = (self.ns(i), self.veth(i, 'h'), self.veth(i, 'p'));
            must("ip", &["netns", "add", &ns]);
            must(
                "ip",
                &[
                    "link", "add", &outer, "type", "veth", "peer", "name", &inner,
                ],
            );
            must("ip", &["link", "set", &inner, "netns", &ns]);
            let cidr = format!("{}/24", self.addr(i));
            must("ip", &["-n", &ns, "addr", "add", &cidr, "dev", &inner]);
            must("ip", &["-n", &ns, "link", "set", &inner, "up"]);
            must("ip", &["-n", &ns, "link", "set", "lo", "up"]);
            must("ip", &["link", "set", &outer, "master", &bridge]);
            must("ip", &["link", "set", &outer, "up"]);
        }
        // Docker's FORWARD policy is DROP and br_netfilter sends bridged frames through
        // it: accept this bridge's own traffic, narrowly, in both chains that may apply.
        for chain in ["FORWARD", "DOCKER-USER"] {
            let rule: Vec<String> = [chain, "-i", &bridge, "-o", &bridge, "-j", "ACCEPT"]
                .iter()
                .map(ToString::to_string)
                .collect();
            let mut insert = vec!["-I".to_owned()];
            insert.extend(rule.iter().cloned());
            let args: Vec<&str> = insert.iter().map(String::as_str).collect();
            if run("iptables", &args) {
                self.forward_rules.push(rule);
            }
        }
    }

    /// Namespace of host `i` (1-based).
    pub fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.prefix)
    }

    fn veth(&self, i: usize, side: char) -> String {
        format!("{}{side}{i}", self.prefix)
    }

    /// Address of host `i`.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.subnet, u8::try_from(10 + i).expect("host"))
    }

    /// The root namespace's address on the bridge (load generator, receivers).
    pub fn host_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.subnet, 1)
    }

    /// Adds an iptables rule inside host `i`'s namespace (`-I` + `rule`).
    pub fn rule_add(&self, i: usize, rule: &[&str]) {
        let ns = self.ns(i);
        let mut args = vec!["netns", "exec", &ns, "iptables", "-I"];
        args.extend_from_slice(rule);
        must("ip", &args);
    }

    /// Removes a rule added by [`Net::rule_add`].
    pub fn rule_del(&self, i: usize, rule: &[&str]) {
        let ns = self.ns(i);
        let mut args = vec!["netns", "exec", &ns, "iptables", "-D"];
        args.extend_from_slice(rule);
        must("ip", &args);
    }

    fn remove(&self) {
        for i in 1..=self.hosts {
            run("ip", &["netns", "del", &self.ns(i)]);
            run("ip", &["link", "del", &self.veth(i, 'h')]);
        }
        run("ip", &["link", "del", &self.bridge]);
        for rule in &self.forward_rules {
            let mut args = vec!["-D"];
            args.extend(rule.iter().map(String::as_str));
            run("iptables", &args);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.remove();
    }
}
