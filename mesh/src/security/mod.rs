//! Security of the mesh: who may join and what an outsider on the network can do.
//!
//! - **Forwarding** runs over QUIC (RFC 9000) with TLS 1.3 (RFC 9001) and mutual
//!   authentication: every node has a certificate issued by the cluster CA ([`generate_ca`],
//!   [`issue_node_cert`]), and both ends of a connection refuse a peer whose certificate does
//!   not chain to that CA ([`server_config`], [`client_config`]).
//! - **Gossip** (chitchat over UDP) is sealed with a shared cluster key ([`key_from_secret`])
//!   using ChaCha20-Poly1305 (RFC 8439), bound to the cluster id, with a per-sender replay
//!   window after RFC 6479 ([`GossipSealer`]).
//!
//! - **Enrolment** lets identical replicas get a certificate for their own name: the replica
//!   keeps its key and sends a signing request authenticated by a join token
//!   ([`CertificateRequest`]); the CA signs it ([`sign_request`]).
//!
//! Nothing here opens sockets; the transport and membership modules use these pieces.

mod certs;
mod cluster_key;
mod enrolment;
mod files;
mod gossip_seal;
mod replay;
mod tls;

#[cfg(test)]
mod test;

pub use certs::{
    generate_ca, issue_node_cert, load_ca_cert, throwaway, CaBundle, CertError, NodeCredentials,
    CA_CERT_FILE, CA_KEY_FILE, CA_VALIDITY, MAX_NAME_LEN, NODE_VALIDITY,
};
pub use cluster_key::{key_from_secret, ClusterKey, KeyError, KEY_LEN, MIN_PASSPHRASE_LEN};
pub use enrolment::{
    parse_token_list, sign_request, CertificateRequest, EnrolAnswer, EnrolError, EnrolRequest,
    JoinToken, MAX_REQUEST_PEM_LEN, MIN_TOKEN_LEN,
};
pub use gossip_seal::{GossipSealer, SealError, MAX_PACKET_LEN, MAX_SENDER_ID_LEN, SEAL_VERSION};
pub use replay::{ReplayKind, DEFAULT_MAX_SENDERS, REPLAY_WINDOW};
pub use tls::{client_config, server_config, TlsError};
