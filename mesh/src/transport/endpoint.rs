//! A node's QUIC endpoint: one UDP socket that both accepts connections from peers and dials
//! them (QUIC, RFC 9000; TLS 1.3 over QUIC, RFC 9001).
//!
//! Both directions use mutual TLS against the cluster CA (`crate::security`): the server side
//! requires a client certificate, the client side checks the peer's certificate and node
//! name. Keep-alives and the idle timeout come from [`TransportConfig`], so every connection
//! doubles as a failure detector for its peer. quinn's types stay inside this module and its
//! siblings (style §1: wrap third-party types), so callers see only `MeshEndpoint`.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use tracing::info;

use super::codes::{varint, CLOSE_SHUTDOWN};
use super::config::{ConfigError, TransportConfig};
use super::error::Cause;
use crate::security::{self, NodeCredentials, TlsError};

/// Why a [`MeshEndpoint`] could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The transport configuration breaks a rule.
    #[error("invalid transport configuration")]
    Config(#[from] ConfigError),
    /// The cluster CA or the node credentials are unusable.
    #[error("cannot build the TLS configuration")]
    Tls(#[source] TlsError),
    /// The TLS configuration does not suit QUIC (no TLS 1.3 initial cipher suite).
    #[error("the TLS configuration cannot be used for QUIC")]
    Quic {
        /// quinn's reason.
        #[source]
        cause: Cause,
    },
    /// The UDP socket could not be bound.
    #[error("cannot bind a UDP socket on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The socket could not be set up for QUIC.
    #[error("cannot set up the UDP socket")]
    Socket(#[source] io::Error),
    /// Called outside a tokio runtime.
    #[error("no tokio runtime: create the endpoint from within one")]
    NoRuntime,
}

/// A node's QUIC endpoint, serving and dialling peers over one UDP socket.
///
/// Cheap to clone; clones share the socket. Serve it with [`serve`](super::serve) and dial
/// from it with a [`ForwardClient`](super::ForwardClient).
#[derive(Debug, Clone)]
pub struct MeshEndpoint {
    inner: quinn::Endpoint,
    client: quinn::ClientConfig,
    config: Arc<TransportConfig>,
    node_name: Arc<str>,
}

impl MeshEndpoint {
    /// Binds a UDP socket on `addr` and creates the endpoint on it.
    ///
    /// `node` is this node's certificate and key; `ca_pem` holds the cluster CA certificates
    /// that peers' certificates must chain to.
    ///
    /// # Errors
    ///
    /// [`BindError::Bind`] if the socket cannot be bound, else as [`from_socket`](Self::from_socket).
    pub fn bind(
        addr: SocketAddr,
        node: &NodeCredentials,
        ca_pem: &str,
        config: TransportConfig,
    ) -> Result<Self, BindError> {
        let socket = UdpSocket::bind(addr).map_err(|source| BindError::Bind { addr, source })?;
        Self::from_socket(socket, node, ca_pem, config)
    }

    /// Creates the endpoint on an already bound socket (tests bind `127.0.0.1:0` and pass it in).
    ///
    /// Must be called from within a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`BindError::Config`] for an invalid `config`, [`BindError::Tls`] /
    /// [`BindError::Quic`] for unusable credentials or CA, [`BindError::NoRuntime`] outside a
    /// tokio runtime, [`BindError::Socket`] if the socket cannot be used.
    pub fn from_socket(
        socket: UdpSocket,
        node: &NodeCredentials,
        ca_pem: &str,
        config: TransportConfig,
    ) -> Result<Self, BindError> {
        config.validate()?;
        let server_tls = security::server_config(ca_pem, node).map_err(BindError::Tls)?;
        let client_tls = security::client_config(ca_pem, node).map_err(BindError::Tls)?;
        let quic_error = |e| BindError::Quic {
            cause: Cause::new(e),
        };
        let server_crypto = QuicServerConfig::try_from(server_tls).map_err(quic_error)?;
        let client_crypto = QuicClientConfig::try_from(client_tls).map_err(quic_error)?;

        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server.transport_config(Arc::new(config.quinn_transport(true)));
        let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
        client.transport_config(Arc::new(config.quinn_transport(false)));

        let runtime = quinn::default_runtime().ok_or(BindError::NoRuntime)?;
        socket.set_nonblocking(true).map_err(BindError::Socket)?;
        let inner = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            runtime,
        )
        .map_err(BindError::Socket)?;
        let local = inner.local_addr().map_err(BindError::Socket)?;
        info!(%local, node = node.node_name(), "mesh endpoint bound");
        Ok(Self {
            inner,
            client,
            config: Arc::new(config),
            node_name: node.node_name().into(),
        })
    }

    /// The address the socket is bound to (with the real port when bound to port 0).
    ///
    /// # Errors
    ///
    /// The OS error if the socket cannot tell.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// This node's name, as in its certificate.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The transport settings this endpoint was created with.
    pub fn config(&self) -> &TransportConfig {
        &self.config
    }

    /// Closes every connection with `CLOSE_SHUTDOWN` and waits until peers were told.
    ///
    /// Streams still open are abandoned: finish or drain them first (a
    /// [`ServerHandle`](super::ServerHandle) does). Clones of this endpoint are closed too.
    pub async fn close(&self) {
        self.inner.close(varint(CLOSE_SHUTDOWN), b"shutting down");
        // quinn resends CONNECTION_CLOSE for a while (RFC 9000 §10.2); `wait_idle` returns
        // once that is over, so a peer hears the close instead of waiting for its idle timeout.
        self.inner.wait_idle().await;
    }

    /// The next incoming connection attempt; `None` once the endpoint is closed.
    pub(crate) async fn accept(&self) -> Option<quinn::Incoming> {
        self.inner.accept().await
    }

    /// Starts a handshake with `peer`, which must present a certificate for `server_name`.
    pub(crate) fn connect(
        &self,
        peer: SocketAddr,
        server_name: &str,
    ) -> Result<quinn::Connecting, quinn::ConnectError> {
        self.inner
            .connect_with(self.client.clone(), peer, server_name)
    }
}
