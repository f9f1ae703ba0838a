//! A chitchat [`Transport`] over UDP that seals every datagram with the cluster key.
//!
//! chitchat runs Scuttlebutt reconciliation (van Renesse, Dumitriu, Gough and Thomas,
//! "Efficient Reconciliation and Flow Control for Anti-Entropy Protocols", LADIS 2008): a SYN
//! carries a digest, the SYN-ACK a digest and a delta, the ACK a delta. Each of these messages
//! is one datagram. This transport serialises the message with chitchat's own wire format,
//! seals the bytes with [`GossipSealer`] (ChaCha20-Poly1305, cluster id as associated data,
//! a replay window per sender) and sends the sealed packet; on receipt it opens the packet
//! and only then deserialises it.
//!
//! That needs chitchat's message serialisation, which 0.11.x exposes
//! (`ChitchatMessage: Serializable + Deserializable`) and 0.12 and later hide behind a
//! crate-private envelope: this is why spheromesh pins chitchat 0.11.
//!
//! Error contract, as chitchat's `Socket` asks: `recv` fails only when the socket is broken.
//! A datagram that does not open (no key, wrong key or cluster, replay, malformed) or does
//! not parse is dropped, counted in [`GossipStats`] and logged at debug, and never reaches
//! chitchat. Transient IO errors are logged and skipped, as in chitchat's `UdpSocket`.
//!
//! Packets are sealed as sender `node_id` with a counter that starts at the Unix time in
//! microseconds and grows by one per packet, so a restarted node (which also takes a new
//! generation) starts above any counter it used before and is not refused as a replay.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use async_trait::async_trait;
use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatMessage, Deserializable, Serializable};
use tracing::{debug, warn};

use crate::security::{GossipSealer, SealError, MAX_PACKET_LEN};

/// Counters of the gossip transport, summed over the life of a [`super::Membership`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GossipStats {
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams received, opened and handed to chitchat.
    pub received: u64,
    /// Dropped: the tag did not verify (no key, wrong key or cluster id, altered packet).
    pub dropped_unauthenticated: u64,
    /// Dropped: a counter already seen from that sender.
    pub dropped_replay: u64,
    /// Dropped: the packet or the message inside did not parse.
    pub dropped_malformed: u64,
    /// Outgoing messages that could not be sealed (too large) and were not sent.
    pub seal_failures: u64,
    /// Outgoing datagrams the socket refused (unreachable destination, wrong family).
    pub send_errors: u64,
}

impl GossipStats {
    /// All datagrams received and dropped.
    pub fn dropped(&self) -> u64 {
        self.dropped_unauthenticated + self.dropped_replay + self.dropped_malformed
    }
}

/// The live counters behind [`GossipStats`].
#[derive(Debug, Default)]
pub(crate) struct TransportCounters {
    sent: AtomicU64,
    received: AtomicU64,
    dropped_unauthenticated: AtomicU64,
    dropped_replay: AtomicU64,
    dropped_malformed: AtomicU64,
    seal_failures: AtomicU64,
    send_errors: AtomicU64,
}

impl TransportCounters {
    pub(crate) fn snapshot(&self) -> GossipStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        GossipStats {
            sent: get(&self.sent),
            received: get(&self.received),
            dropped_unauthenticated: get(&self.dropped_unauthenticated),
            dropped_replay: get(&self.dropped_replay),
            dropped_malformed: get(&self.dropped_malformed),
            seal_failures: get(&self.seal_failures),
            send_errors: get(&self.send_errors),
        }
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// State shared by every socket the transport opens: one per (re)start of chitchat, so the
/// counter and the replay windows survive a restart of the gossip task.
#[derive(Debug)]
struct Shared {
    /// `None`: gossip in clear.
    sealer: Option<Mutex<GossipSealer>>,
    sender_id: String,
    counter: AtomicU64,
    counters: Arc<TransportCounters>,
    /// Test hook: make the next `recv` panic, to exercise the supervisor.
    #[cfg(test)]
    panic_next_recv: std::sync::atomic::AtomicBool,
}

/// The sealing transport; cheap to clone, clones share counters and replay windows.
#[derive(Debug, Clone)]
pub(crate) struct SealedTransport {
    shared: Arc<Shared>,
}

impl SealedTransport {
    /// A transport sealing as `sender_id` with `sealer`, or gossiping in clear without one.
    pub(crate) fn new(
        sealer: Option<GossipSealer>,
        sender_id: impl Into<String>,
        counters: Arc<TransportCounters>,
    ) -> Self {
        // Unix microseconds: above every counter a previous run of this node used, unless
        // it sent more than a million packets a second or the clock went backwards.
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |since| {
                u64::try_from(since.as_micros()).unwrap_or(u64::MAX / 2)
            });
        SealedTransport {
            shared: Arc::new(Shared {
                sealer: sealer.map(Mutex::new),
                sender_id: sender_id.into(),
                counter: AtomicU64::new(start),
                counters,
                #[cfg(test)]
                panic_next_recv: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Test hook: the next `recv` of the open socket panics.
    #[cfg(test)]
    pub(crate) fn panic_next_recv(&self) {
        self.shared.panic_next_recv.store(true, Ordering::SeqCst);
    }
}

#[async_trait]
impl Transport for SealedTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = tokio::net::UdpSocket::bind(listen_addr)
            .await
            .with_context(|| format!("failed to bind {listen_addr}/udp for gossip"))?;
        Ok(Box::new(SealedSocket {
            socket,
            shared: self.shared.clone(),
            plain: Vec::with_capacity(MAX_PACKET_LEN),
            buf_recv: vec![0u8; MAX_PACKET_LEN].into_boxed_slice(),
        }))
    }
}

/// One bound UDP socket of the transport.
struct SealedSocket {
    socket: tokio::net::UdpSocket,
    shared: Arc<Shared>,
    plain: Vec<u8>,
    buf_recv: Box<[u8]>,
}

#[async_trait]
impl Socket for SealedSocket {
    /// Sends `message` to `to`. Never fails: a message too large to seal and a datagram the
    /// socket refuses are counted and skipped, as UDP would lose them anyway.
    async fn send(&mut self, to: SocketAddr, message: ChitchatMessage) -> anyhow::Result<()> {
        self.plain.clear();
        message.serialize(&mut self.plain);
        let shared = &self.shared;
        let sealed;
        let packet: &[u8] = match &shared.sealer {
            None => &self.plain,
            Some(sealer) => {
                let counter = shared.counter.fetch_add(1, Ordering::Relaxed);
                let result = sealer.lock().unwrap_or_else(PoisonError::into_inner).seal(
                    &self.plain,
                    &shared.sender_id,
                    counter,
                );
                match result {
                    Ok(packet) => {
                        sealed = packet;
                        &sealed
                    }
                    Err(err) => {
                        TransportCounters::bump(&shared.counters.seal_failures);
                        warn!(to = %to, len = self.plain.len(), error = %err, "cannot seal gossip message");
                        return Ok(());
                    }
                }
            }
        };
        match self.socket.send_to(packet, to).await {
            Ok(_) => TransportCounters::bump(&shared.counters.sent),
            // A failed send says the destination is unreachable (no route, wrong address
            // family, ICMP error), not that this socket is broken, which `recv` would tell.
            Err(err) => {
                TransportCounters::bump(&shared.counters.send_errors);
                debug!(to = %to, error = %err, "gossip send failed");
            }
        }
        Ok(())
    }

    /// Receives the next datagram that opens and parses; cancel-safe, since everything after
    /// `recv_from` is synchronous.
    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        #[cfg(test)]
        if self.shared.panic_next_recv.swap(false, Ordering::SeqCst) {
            panic!("injected panic in the gossip transport (test hook)");
        }
        loop {
            let (len, from) = match self.socket.recv_from(&mut self.buf_recv).await {
                Ok(received) => received,
                Err(err) if is_transient(&err) => {
                    debug!(error = %err, "transient gossip recv error");
                    continue;
                }
                Err(err) => return Err(err).context("fatal gossip recv error"),
            };
            if let Some(message) = self.open(&self.buf_recv[..len], from) {
                TransportCounters::bump(&self.shared.counters.received);
                return Ok((from, message));
            }
        }
    }
}

impl SealedSocket {
    /// Opens and parses one datagram, or counts and logs why it is dropped.
    fn open(&self, datagram: &[u8], from: SocketAddr) -> Option<ChitchatMessage> {
        let counters = &self.shared.counters;
        let opened;
        let plain = match &self.shared.sealer {
            None => datagram,
            Some(sealer) => {
                let result = sealer
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .open(datagram);
                match result {
                    Ok((_sender, payload)) => {
                        opened = payload;
                        &opened[..]
                    }
                    Err(err) => {
                        let counter = match err {
                            SealError::Authentication => &counters.dropped_unauthenticated,
                            SealError::Replay { .. } => &counters.dropped_replay,
                            _ => &counters.dropped_malformed,
                        };
                        TransportCounters::bump(counter);
                        debug!(from = %from, len = datagram.len(), error = %err, "dropped gossip packet");
                        return None;
                    }
                }
            }
        };
        let mut cursor = plain;
        match ChitchatMessage::deserialize(&mut cursor) {
            Ok(message) => Some(message),
            Err(err) => {
                TransportCounters::bump(&counters.dropped_malformed);
                debug!(from = %from, len = plain.len(), error = %err, "dropped unparsable gossip message");
                None
            }
        }
    }
}

/// Receive errors after which the socket still works (chitchat's `is_transient_io_error`,
/// plus interrupted calls).
fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::OutOfMemory
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::security::ClusterKey;

    fn transport(key: u8, cluster: &str, node: &str) -> (SealedTransport, Arc<TransportCounters>) {
        let counters = Arc::new(TransportCounters::default());
        let sealer = GossipSealer::new(&ClusterKey::from_bytes([key; 32]), cluster);
        (
            SealedTransport::new(Some(sealer), node, counters.clone()),
            counters,
        )
    }

    fn ack() -> ChitchatMessage {
        ChitchatMessage::BadCluster
    }

    async fn open(transport: &SealedTransport) -> (Box<dyn Socket>, SocketAddr) {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = probe.local_addr().expect("addr");
        drop(probe);
        (transport.open(addr).await.expect("open"), addr)
    }

    async fn recv_within(socket: &mut Box<dyn Socket>) -> Option<(SocketAddr, ChitchatMessage)> {
        tokio::time::timeout(Duration::from_millis(300), socket.recv())
            .await
            .ok()
            .map(|r| r.expect("recv"))
    }

    #[tokio::test]
    async fn sealed_messages_arrive_and_everything_else_is_counted() {
        let (a, _) = transport(1, "c", "node-a");
        let (b, b_counters) = transport(1, "c", "node-b");
        let (mut a_socket, a_addr) = open(&a).await;
        let (mut b_socket, b_addr) = open(&b).await;

        a_socket.send(b_addr, ack()).await.expect("send");
        let (from, message) = recv_within(&mut b_socket).await.expect("delivered");
        assert_eq!((from, message), (a_addr, ack()));

        // Plain chitchat bytes, junk, a wrong key and a replay are all dropped.
        let raw = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut plain = Vec::new();
        ack().serialize(&mut plain);
        raw.send_to(&plain, b_addr).await.expect("send");
        raw.send_to(b"junk", b_addr).await.expect("send");
        let intruder = GossipSealer::new(&ClusterKey::from_bytes([2; 32]), "c");
        let forged = intruder.seal(&plain, "node-a", u64::MAX).expect("seal");
        raw.send_to(&forged, b_addr).await.expect("send");
        let genuine = GossipSealer::new(&ClusterKey::from_bytes([1; 32]), "c");
        let packet = genuine.seal(&plain, "node-z", 7).expect("seal");
        raw.send_to(&packet, b_addr).await.expect("send");
        raw.send_to(&packet, b_addr).await.expect("send");
        // Sealed junk: opens but is not a chitchat message.
        let junk = genuine.seal(b"junk", "node-z", 8).expect("seal");
        raw.send_to(&junk, b_addr).await.expect("send");

        assert_eq!(
            recv_within(&mut b_socket).await.map(|(f, _)| f),
            Some(raw.local_addr().expect("addr"))
        );
        assert!(recv_within(&mut b_socket).await.is_none());
        let stats = b_counters.snapshot();
        assert_eq!(stats.received, 2);
        assert_eq!(stats.dropped_unauthenticated, 1, "{stats:?}");
        assert_eq!(stats.dropped_replay, 1, "{stats:?}");
        assert_eq!(stats.dropped_malformed, 3, "{stats:?}");
        assert_eq!(stats.dropped(), 5);
        drop(a_socket);
    }

    #[tokio::test]
    async fn a_restarted_sender_is_not_a_replay() {
        let (b, b_counters) = transport(1, "c", "node-b");
        let (mut b_socket, b_addr) = open(&b).await;
        for _ in 0..2 {
            // A fresh transport (a restart) under the same node id.
            let (a, _) = transport(1, "c", "node-a");
            let (mut a_socket, _) = open(&a).await;
            a_socket.send(b_addr, ack()).await.expect("send");
            assert!(recv_within(&mut b_socket).await.is_some());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(b_counters.snapshot().dropped_replay, 0);
    }
}
