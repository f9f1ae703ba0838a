//! rustls configurations for the mesh's QUIC connections: QUIC (RFC 9000) secured with
//! TLS 1.3 as RFC 9001 specifies, with mutual authentication against the cluster CA.
//!
//! Both sides trust the cluster CA and nothing else: not the system roots, not the peer's raw
//! key. The server requires a client certificate that chains to the CA (rustls'
//! `WebPkiClientVerifier`, which also checks validity dates and the clientAuth usage); the
//! client checks the server certificate against the CA and the server name it dialled (the
//! peer's node name). Each rejection surfaces as a precise `rustls::Error`, e.g.
//! `InvalidCertificate(UnknownIssuer)` or `NoCertificatesPresented`.
//!
//! Only TLS 1.3 is offered, as QUIC requires (RFC 9001 §4.2); the crate is also built without
//! rustls' `tls12` feature. ALPN is [`crate::protocol::ALPN`], which carries the protocol
//! version. 0-RTT stays off (rustls' default), since a replayed forward request would run a
//! task twice. The crypto provider is `ring`, passed explicitly so that no process-wide
//! default provider needs installing.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::certs::{parse_certs, CertError, NodeCredentials};
use crate::protocol::ALPN;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The cluster CA PEM holds no parsable certificate.
    #[error("invalid cluster CA certificate")]
    InvalidCa(#[source] CertError),
    /// A cluster CA certificate cannot serve as a trust anchor.
    #[error("the cluster CA certificate is not a usable trust anchor")]
    TrustAnchor(#[source] rustls::Error),
    /// The node's certificate chain or key does not parse.
    #[error("invalid node credentials")]
    InvalidCredentials(#[source] CertError),
    /// The client or server certificate verifier could not be built.
    #[error("cannot build the certificate verifier")]
    Verifier(#[source] VerifierBuilderError),
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error("rustls refused the configuration")]
    Config(#[source] rustls::Error),
}

/// The server side of the mesh's QUIC connections.
///
/// Requires a client certificate issued by a CA in `ca_pem` and presents `node`'s
/// certificate. `ca_pem` may hold several CA certificates (e.g. old and new while the
/// cluster CA is rotated); each is trusted.
///
/// # Errors
///
/// [`TlsError::InvalidCa`] / [`TlsError::TrustAnchor`] for an unusable CA,
/// [`TlsError::InvalidCredentials`] / [`TlsError::Config`] for unusable node credentials.
pub fn server_config(ca_pem: &str, node: &NodeCredentials) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider.clone())
        .build()
        .map_err(TlsError::Verifier)?;
    let (chain, key) = credentials(node)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// The client side of the mesh's QUIC connections.
///
/// Trusts only the CAs in `ca_pem` and presents `node`'s certificate when asked. The caller
/// dials a peer with its node name as server name.
///
/// # Errors
///
/// As [`server_config`].
pub fn client_config(ca_pem: &str, node: &NodeCredentials) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(ca_pem)?, provider.clone())
        .build()
        .map_err(TlsError::Verifier)?;
    let (chain, key) = credentials(node)?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A root store holding exactly the certificates in `ca_pem`.
fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(ca_pem, "cluster CA certificate").map_err(TlsError::InvalidCa)? {
        roots.add(cert).map_err(TlsError::TrustAnchor)?;
    }
    Ok(Arc::new(roots))
}

type Credentials = (
    Vec<rustls_pki_types::CertificateDer<'static>>,
    rustls_pki_types::PrivateKeyDer<'static>,
);

fn credentials(node: &NodeCredentials) -> Result<Credentials, TlsError> {
    let chain = node
        .cert_chain_der()
        .map_err(TlsError::InvalidCredentials)?;
    let key = node.key_der().map_err(TlsError::InvalidCredentials)?;
    Ok((chain, key))
}
