//! Seed resolution: every `host:port` seed is resolved again each gossip round.
//!
//! Seeds are how a node first reaches the cluster, and how two halves of a partitioned
//! cluster find each other again (the role seeds play in Cassandra's gossip, CASSANDRA-150).
//! A compose or Kubernetes service name resolves to one address per replica, and the set
//! changes as replicas come and go, so a name is looked up every round rather than once.
//! chitchat 0.11 would re-resolve only every 60 s, so membership resolves seeds itself and
//! hands chitchat none (see `supervisor.rs`, which gossips to each resolved seed that is not a
//! live peer).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{self, MissedTickBehavior};
use tracing::debug;

/// The addresses of the seeds, as last resolved.
pub(crate) type SeedAddrs = HashSet<SocketAddr>;

/// Resolves `seeds` every `interval` and publishes the union of their addresses.
#[derive(Debug)]
pub(crate) struct SeedResolver {
    seeds: Vec<String>,
    /// Only addresses of this family are kept: a socket bound to IPv4 cannot send to IPv6.
    ipv4: bool,
    /// Last good answer per seed, kept while a lookup fails (a DNS hiccup must not empty
    /// the seed list).
    last: BTreeMap<String, Vec<SocketAddr>>,
    lookup_timeout: Duration,
}

impl SeedResolver {
    /// A resolver of `seeds` for a socket bound to `listen`; each lookup is given at most
    /// `lookup_timeout`.
    pub(crate) fn new(seeds: Vec<String>, listen: SocketAddr, lookup_timeout: Duration) -> Self {
        SeedResolver {
            seeds,
            ipv4: listen.is_ipv4(),
            last: BTreeMap::new(),
            lookup_timeout,
        }
    }

    /// Resolves every seed once and returns the union of their addresses.
    pub(crate) async fn resolve(&mut self) -> SeedAddrs {
        for seed in &self.seeds {
            let lookup = time::timeout(self.lookup_timeout, tokio::net::lookup_host(seed)).await;
            match lookup {
                Ok(Ok(addrs)) => {
                    let addrs: Vec<SocketAddr> =
                        addrs.filter(|addr| addr.is_ipv4() == self.ipv4).collect();
                    if self.last.get(seed) != Some(&addrs) {
                        debug!(seed = %seed, addrs = ?addrs, "seed resolved");
                    }
                    self.last.insert(seed.clone(), addrs);
                }
                Ok(Err(err)) => debug!(seed = %seed, error = %err, "seed lookup failed"),
                Err(_) => debug!(seed = %seed, "seed lookup timed out"),
            }
        }
        self.last.values().flatten().copied().collect()
    }

    /// Resolves every `interval` until `tx` has no receiver left.
    pub(crate) async fn run(mut self, interval: Duration, tx: watch::Sender<SeedAddrs>) {
        if self.seeds.is_empty() {
            return;
        }
        let mut tick = time::interval(interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let addrs = self.resolve().await;
            tx.send_if_modified(|current| {
                let changed = *current != addrs;
                *current = addrs;
                changed
            });
            if tx.is_closed() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_and_names_resolve_and_failures_keep_the_last_answer() {
        let listen = SocketAddr::from(([127, 0, 0, 1], 7946));
        let seeds = vec![
            "127.0.0.1:7001".to_owned(),
            "localhost:7002".to_owned(),
            "[::1]:7003".to_owned(),
            "no-such-host.invalid:7004".to_owned(),
        ];
        let mut resolver = SeedResolver::new(seeds, listen, Duration::from_secs(5));
        let addrs = resolver.resolve().await;
        assert!(addrs.contains(&SocketAddr::from(([127, 0, 0, 1], 7001))));
        assert!(addrs.contains(&SocketAddr::from(([127, 0, 0, 1], 7002))));
        // IPv6 addresses are dropped for an IPv4 socket.
        assert!(addrs.iter().all(SocketAddr::is_ipv4), "{addrs:?}");

        // A seed that stops resolving keeps its previous addresses.
        resolver.seeds = vec!["no-such-host.invalid:7001".to_owned()];
        resolver.last.insert(
            "no-such-host.invalid:7001".to_owned(),
            vec![SocketAddr::from(([127, 0, 0, 9], 7001))],
        );
        let addrs = resolver.resolve().await;
        assert!(addrs.contains(&SocketAddr::from(([127, 0, 0, 9], 7001))));
    }
}
