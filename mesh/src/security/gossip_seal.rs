//! Sealing gossip datagrams with the cluster key: ChaCha20-Poly1305 (RFC 8439) with the
//! cluster id and the packet header as associated data, plus a per-sender replay window
//! (RFC 6479, see `replay.rs`).
//!
//! Packet layout (all integers big-endian):
//!
//! ```text
//! version (1) | sender_len (1) | sender_id (sender_len) | counter (8) | nonce (12) | ciphertext | tag (16)
//! ```
//!
//! Associated data: `cluster_id_len (8) | cluster_id | version | sender_len | sender_id | counter`.
//! The cluster id is length-prefixed so that no two (cluster id, header) pairs encode alike;
//! it is never sent, so a packet from another cluster, even one sharing the key, fails
//! authentication. The sender and counter are authenticated, so neither can be altered to
//! dodge the replay window.
//!
//! Nonces are 96 random bits per packet. With random nonces the chance that two packets under
//! one key share a nonce is about `n² / 2⁹⁷` after `n` packets: below 2⁻³² up to 2³² packets
//! (NIST SP 800-38D's bound), i.e. 50 days of a whole cluster sending 1,000 gossip packets a
//! second, and about 2⁻²⁷ after a year at that rate. Counter-derived nonces would avoid the
//! bound but repeat whenever a node restarts its counter; random nonces need no state. Rotate
//! the cluster key yearly at such rates.
//!
//! Counters: the replay window refuses a counter at or below one already seen from the same
//! sender id (beyond a 64-packet reordering margin). A node must therefore never reuse a
//! counter under a sender id, across restarts too: start it from the wall clock (e.g. Unix
//! time in microseconds) or put a per-start generation in the sender id, as chitchat's node id
//! does with its `generation_id`.

use std::fmt;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use rand::rngs::OsRng;
use rand::RngCore;

use super::cluster_key::ClusterKey;
use super::replay::{ReplayKind, ReplayWindow, DEFAULT_MAX_SENDERS};

/// Version byte of the packet layout above.
pub const SEAL_VERSION: u8 = 1;

/// Largest sealed packet: the largest UDP payload over IPv4.
pub const MAX_PACKET_LEN: usize = 65_507;

/// Longest sender id in bytes (its length is sent in one byte).
pub const MAX_SENDER_ID_LEN: usize = u8::MAX as usize;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const COUNTER_LEN: usize = 8;
/// Version, sender length, counter, nonce and tag: everything but the sender id and payload.
const FIXED_OVERHEAD: usize = 1 + 1 + COUNTER_LEN + NONCE_LEN + TAG_LEN;

/// Why a gossip packet could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The tag did not verify: wrong key, wrong cluster id, or the packet was altered.
    #[error("gossip packet failed authentication")]
    Authentication,
    /// The packet is too short, too long or its header is inconsistent.
    #[error("malformed gossip packet: {reason}")]
    Malformed {
        /// What is wrong.
        reason: &'static str,
    },
    /// The packet has a version byte this node does not know.
    #[error("unsupported gossip packet version {version}")]
    UnsupportedVersion {
        /// The version byte received.
        version: u8,
    },
    /// The counter was already seen from this sender, or is below its window.
    #[error("replayed gossip packet from {sender} (counter {counter}, {kind:?})")]
    Replay {
        /// The sender id in the packet.
        sender: String,
        /// The counter in the packet.
        counter: u64,
        /// Duplicate or too old.
        kind: ReplayKind,
    },
    /// The sender id given to [`GossipSealer::seal`] is empty or longer than
    /// [`MAX_SENDER_ID_LEN`] bytes.
    #[error("sender id of {len} bytes: must be 1..={MAX_SENDER_ID_LEN}")]
    InvalidSenderId {
        /// Length of the sender id in bytes.
        len: usize,
    },
    /// The sealed packet would exceed [`MAX_PACKET_LEN`].
    #[error("sealed packet of {len} bytes exceeds {max}")]
    TooLarge {
        /// Length the sealed packet would have.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The system random number generator failed to produce a nonce.
    #[error("cannot read the system random number generator")]
    Entropy(#[source] rand::Error),
}

/// Seals and opens the gossip packets of one cluster, and remembers which counters each
/// sender has used.
pub struct GossipSealer {
    key: ChaCha20Poly1305,
    cluster_id: String,
    replay: ReplayWindow,
}

impl GossipSealer {
    /// A sealer for `cluster_id` under `key`; every node of the cluster needs both.
    pub fn new(key: &ClusterKey, cluster_id: impl Into<String>) -> Self {
        GossipSealer {
            key: ChaCha20Poly1305::new(Key::from_slice(key.as_bytes())),
            cluster_id: cluster_id.into(),
            replay: ReplayWindow::new(DEFAULT_MAX_SENDERS),
        }
    }

    /// Bytes sealing adds to a payload sent as `sender_id`; subtract it from the datagram
    /// budget given to gossip.
    pub fn overhead(sender_id: &str) -> usize {
        FIXED_OVERHEAD + sender_id.len()
    }

    /// Seals `plaintext` as `sender_id` with `counter`, which must grow with every packet
    /// this sender sends (see the module documentation on restarts).
    ///
    /// # Errors
    ///
    /// [`SealError::InvalidSenderId`], [`SealError::TooLarge`], or [`SealError::Entropy`] if
    /// no nonce could be drawn.
    pub fn seal(
        &self,
        plaintext: &[u8],
        sender_id: &str,
        counter: u64,
    ) -> Result<Vec<u8>, SealError> {
        let sender_len = match u8::try_from(sender_id.len()) {
            Ok(len) if len > 0 => len,
            _ => {
                return Err(SealError::InvalidSenderId {
                    len: sender_id.len(),
                })
            }
        };
        let len = plaintext.len() + Self::overhead(sender_id);
        if len > MAX_PACKET_LEN {
            return Err(SealError::TooLarge {
                len,
                max: MAX_PACKET_LEN,
            });
        }
        let mut nonce = [0u8; NONCE_LEN];
        OsRng
            .try_fill_bytes(&mut nonce)
            .map_err(SealError::Entropy)?;

        let mut packet = Vec::with_capacity(len);
        packet.push(SEAL_VERSION);
        packet.push(sender_len);
        packet.extend_from_slice(sender_id.as_bytes());
        packet.extend_from_slice(&counter.to_be_bytes());
        let header_len = packet.len();
        packet.extend_from_slice(&nonce);
        let body_start = packet.len();
        packet.extend_from_slice(plaintext);

        let aad = self.associated_data(&packet[..header_len]);
        let (_, body) = packet.split_at_mut(body_start);
        let tag = self
            .key
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, body)
            // Only fails for payloads of 256 GiB; ours are bounded above.
            .map_err(|_| SealError::TooLarge {
                len,
                max: MAX_PACKET_LEN,
            })?;
        packet.extend_from_slice(&tag);
        Ok(packet)
    }

    /// Opens a sealed packet and returns its sender id and payload.
    ///
    /// The sender's replay window moves only when the packet authenticates; a refused packet
    /// changes nothing.
    ///
    /// # Errors
    ///
    /// [`SealError::Malformed`] / [`SealError::UnsupportedVersion`] for packets that do not
    /// parse, [`SealError::Replay`] for a counter already used, [`SealError::Authentication`]
    /// if the tag does not verify.
    pub fn open(&mut self, packet: &[u8]) -> Result<(String, Vec<u8>), SealError> {
        let parsed = parse(packet)?;
        let sender = parsed.sender;
        let replay = |kind| SealError::Replay {
            sender: sender.to_owned(),
            counter: parsed.counter,
            kind,
        };
        // Cheap refusal of replays before any cryptography.
        self.replay.check(sender, parsed.counter).map_err(replay)?;

        let aad = self.associated_data(parsed.header);
        let mut payload = parsed.ciphertext.to_vec();
        self.key
            .decrypt_in_place_detached(
                Nonce::from_slice(parsed.nonce),
                &aad,
                &mut payload,
                Tag::from_slice(parsed.tag),
            )
            .map_err(|_| SealError::Authentication)?;

        self.replay.accept(sender, parsed.counter).map_err(replay)?;
        Ok((sender.to_owned(), payload))
    }

    /// Drops the replay window of `sender_id`, e.g. once it has left the cluster for good.
    pub fn forget_sender(&mut self, sender_id: &str) {
        self.replay.forget(sender_id);
    }

    fn associated_data(&self, header: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(8 + self.cluster_id.len() + header.len());
        aad.extend_from_slice(&(self.cluster_id.len() as u64).to_be_bytes());
        aad.extend_from_slice(self.cluster_id.as_bytes());
        aad.extend_from_slice(header);
        aad
    }
}

impl fmt::Debug for GossipSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GossipSealer")
            .field("cluster_id", &self.cluster_id)
            .field("senders_tracked", &self.replay.len())
            .finish_non_exhaustive()
    }
}

/// The fields of a packet, borrowed from it.
struct Parsed<'a> {
    /// Version, sender length, sender id and counter: the authenticated header.
    header: &'a [u8],
    sender: &'a str,
    counter: u64,
    nonce: &'a [u8],
    ciphertext: &'a [u8],
    tag: &'a [u8],
}

fn parse(packet: &[u8]) -> Result<Parsed<'_>, SealError> {
    let malformed = |reason| SealError::Malformed { reason };
    if packet.len() > MAX_PACKET_LEN {
        return Err(malformed("longer than the largest datagram"));
    }
    let [version, sender_len, rest @ ..] = packet else {
        return Err(malformed("shorter than the fixed header"));
    };
    if *version != SEAL_VERSION {
        return Err(SealError::UnsupportedVersion { version: *version });
    }
    let sender_len = usize::from(*sender_len);
    if sender_len == 0 {
        return Err(malformed("empty sender id"));
    }
    if rest.len() < sender_len + COUNTER_LEN + NONCE_LEN + TAG_LEN {
        return Err(malformed("shorter than its header announces"));
    }
    let (sender, rest) = rest.split_at(sender_len);
    let sender = std::str::from_utf8(sender).map_err(|_| malformed("sender id is not UTF-8"))?;
    let (counter, rest) = rest.split_at(COUNTER_LEN);
    let mut counter_bytes = [0u8; COUNTER_LEN];
    counter_bytes.copy_from_slice(counter);
    let (nonce, rest) = rest.split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    Ok(Parsed {
        header: &packet[..2 + sender_len + COUNTER_LEN],
        sender,
        counter: u64::from_be_bytes(counter_bytes),
        nonce,
        ciphertext,
        tag,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(byte: u8) -> ClusterKey {
        ClusterKey::from_bytes([byte; 32])
    }

    fn pair() -> (GossipSealer, GossipSealer) {
        (
            GossipSealer::new(&key(1), "cluster-a"),
            GossipSealer::new(&key(1), "cluster-a"),
        )
    }

    #[test]
    fn round_trip() {
        let (tx, mut rx) = pair();
        let packet = tx.seal(b"digest: 3 nodes", "node-a", 1).expect("seal");
        assert_eq!(
            packet.len(),
            b"digest: 3 nodes".len() + GossipSealer::overhead("node-a")
        );
        let (sender, payload) = rx.open(&packet).expect("open");
        assert_eq!(sender, "node-a");
        assert_eq!(payload, b"digest: 3 nodes");
        // The payload is not sent in clear.
        assert!(!packet.windows(6).any(|w| w == b"digest"));
        // Empty payloads are fine.
        let packet = tx.seal(b"", "node-a", 2).expect("seal");
        assert_eq!(rx.open(&packet).expect("open").1, b"");
    }

    #[test]
    fn wrong_key_or_cluster_is_an_authentication_error() {
        let (tx, _) = pair();
        let packet = tx.seal(b"hello", "node-a", 1).expect("seal");
        let mut other_key = GossipSealer::new(&key(2), "cluster-a");
        assert!(matches!(
            other_key.open(&packet),
            Err(SealError::Authentication)
        ));
        let mut other_cluster = GossipSealer::new(&key(1), "cluster-b");
        assert!(matches!(
            other_cluster.open(&packet),
            Err(SealError::Authentication)
        ));
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let (tx, mut rx) = pair();
        let packet = tx.seal(b"membership digest", "node-a", 42).expect("seal");
        for byte in 0..packet.len() {
            for bit in 0..8 {
                let mut bad = packet.clone();
                bad[byte] ^= 1 << bit;
                let err = rx.open(&bad).expect_err("tampered packet opened");
                if byte >= 2 + "node-a".len() {
                    // Counter, nonce, ciphertext and tag are covered by the tag.
                    assert!(matches!(err, SealError::Authentication), "{byte}: {err:?}");
                }
            }
        }
        // Failed attempts did not touch the window: the original still opens.
        assert!(rx.open(&packet).is_ok());
    }

    #[test]
    fn replays_are_refused_and_reordering_is_accepted_once() {
        let (tx, mut rx) = pair();
        let p10 = tx.seal(b"ten", "node-a", 10).expect("seal");
        let p5 = tx.seal(b"five", "node-a", 5).expect("seal");
        assert!(rx.open(&p10).is_ok());
        assert!(matches!(
            rx.open(&p10),
            Err(SealError::Replay {
                counter: 10,
                kind: ReplayKind::Duplicate,
                ..
            })
        ));
        assert_eq!(rx.open(&p5).expect("in window").1, b"five");
        assert!(matches!(
            rx.open(&p5),
            Err(SealError::Replay {
                kind: ReplayKind::Duplicate,
                ..
            })
        ));
        // Another sender's counters are its own.
        let other = tx.seal(b"ten", "node-b", 10).expect("seal");
        assert!(rx.open(&other).is_ok());
    }

    #[test]
    fn too_old_counters_are_refused() {
        let (tx, mut rx) = pair();
        assert!(rx
            .open(&tx.seal(b"x", "node-a", 100).expect("seal"))
            .is_ok());
        let old = tx.seal(b"x", "node-a", 36).expect("seal");
        assert!(matches!(
            rx.open(&old),
            Err(SealError::Replay {
                kind: ReplayKind::TooOld,
                ..
            })
        ));
        assert!(rx.open(&tx.seal(b"x", "node-a", 37).expect("seal")).is_ok());
    }

    #[test]
    fn forged_packets_do_not_move_the_window() {
        let (tx, mut rx) = pair();
        let forger = GossipSealer::new(&key(9), "cluster-a");
        let forged = forger.seal(b"x", "node-a", 1_000).expect("seal");
        assert!(matches!(rx.open(&forged), Err(SealError::Authentication)));
        assert!(rx.open(&tx.seal(b"x", "node-a", 1).expect("seal")).is_ok());
    }

    #[test]
    fn bad_inputs_and_bounds() {
        let (tx, mut rx) = pair();
        assert!(matches!(
            tx.seal(b"x", "", 1),
            Err(SealError::InvalidSenderId { len: 0 })
        ));
        assert!(matches!(
            tx.seal(b"x", &"n".repeat(256), 1),
            Err(SealError::InvalidSenderId { len: 256 })
        ));
        assert!(tx.seal(b"x", &"n".repeat(255), 1).is_ok());
        let big = vec![0u8; MAX_PACKET_LEN];
        assert!(matches!(
            tx.seal(&big, "node-a", 1),
            Err(SealError::TooLarge { .. })
        ));
        let fits = vec![0u8; MAX_PACKET_LEN - GossipSealer::overhead("node-a")];
        let packet = tx.seal(&fits, "node-a", 1).expect("largest packet");
        assert_eq!(packet.len(), MAX_PACKET_LEN);
        assert!(rx.open(&packet).is_ok());

        assert!(matches!(rx.open(&[]), Err(SealError::Malformed { .. })));
        assert!(matches!(
            rx.open(&[2, 1, b'a']),
            Err(SealError::UnsupportedVersion { version: 2 })
        ));
        let short = tx.seal(b"", "node-a", 2).expect("seal");
        assert!(matches!(
            rx.open(&short[..short.len() - 1]),
            Err(SealError::Malformed { .. })
        ));
        let mut oversized = packet.clone();
        oversized.push(0);
        assert!(matches!(
            rx.open(&oversized),
            Err(SealError::Malformed { .. })
        ));
    }

    proptest! {
        #[test]
        fn random_bytes_never_open(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let (_, mut rx) = pair();
            prop_assert!(rx.open(&bytes).is_err());
        }

        #[test]
        fn random_bodies_behind_a_valid_header_never_open(
            sender in "[a-z0-9-]{1,40}",
            counter in any::<u64>(),
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let (_, mut rx) = pair();
            let mut packet = vec![SEAL_VERSION, sender.len() as u8];
            packet.extend_from_slice(sender.as_bytes());
            packet.extend_from_slice(&counter.to_be_bytes());
            packet.extend_from_slice(&body);
            prop_assert!(rx.open(&packet).is_err());
        }

        #[test]
        fn sealed_packets_round_trip(
            payload in proptest::collection::vec(any::<u8>(), 0..1024),
            sender in "\\PC{1,30}",
            counter in any::<u64>(),
        ) {
            let (tx, mut rx) = pair();
            let packet = tx.seal(&payload, &sender, counter).expect("seal");
            let (got_sender, got_payload) = rx.open(&packet).expect("open");
            prop_assert_eq!(got_sender, sender);
            prop_assert_eq!(got_payload, payload);
        }
    }
}
