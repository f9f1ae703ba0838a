//! Cluster credentials: a self-signed cluster CA and the node certificates it issues
//! (X.509 as profiled by RFC 5280), generated with `rcgen`.
//!
//! Every node holds the CA certificate (`ca.pem`) and its own certificate and key
//! (`<node>.pem`, `<node>.key`); only the machine that issues certificates needs the CA key
//! (`ca.key`). Node certificates carry both the serverAuth and clientAuth extended key usages,
//! because in the mesh every node is the QUIC server for some peers and the client of others
//! (mutual TLS, see `tls.rs`). Keys are ECDSA P-256, stored as PKCS#8 PEM with mode 0600.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::files;

/// Lifetime of a generated cluster CA: ten years.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// Lifetime of a node certificate: one year, and never past the CA's own expiry.
pub const NODE_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Certificates start this long before they are made, so that a peer whose clock is a little
/// behind does not reject a fresh certificate as not yet valid.
const BACKDATE: Duration = Duration::from_secs(60 * 60);

/// Longest cluster or node name: the upper bound of an X.509 common name (RFC 5280).
pub const MAX_NAME_LEN: usize = 64;

/// File name of the CA certificate in a credentials directory.
pub const CA_CERT_FILE: &str = "ca.pem";

/// File name of the CA key in a credentials directory.
pub const CA_KEY_FILE: &str = "ca.key";

/// Why credentials could not be made, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The cluster name is empty, too long or has control characters.
    #[error("invalid cluster name {name:?}: must be 1..={MAX_NAME_LEN} printable characters")]
    InvalidClusterName {
        /// The rejected name.
        name: String,
    },
    /// The node name is not a DNS name of at most [`MAX_NAME_LEN`] bytes.
    #[error("invalid node name {name:?}: must be a DNS name of at most {MAX_NAME_LEN} bytes")]
    InvalidNodeName {
        /// The rejected name.
        name: String,
    },
    /// A subject alternative name is neither a DNS name nor an IP address.
    #[error("invalid subject alternative name {san:?}: not a DNS name or IP address")]
    InvalidSan {
        /// The rejected name.
        san: String,
    },
    /// `rcgen` failed to generate a key or certificate.
    #[error("cannot generate {what}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// A PEM certificate or key could not be parsed.
    #[error("cannot parse {what}")]
    InvalidPem {
        /// Which input failed.
        what: &'static str,
        /// The cause.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// A key or CA certificate is not usable for signing.
    #[error("unusable {what}")]
    Unusable {
        /// Which input failed.
        what: &'static str,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// The CA certificate does not have the CA basic constraint.
    #[error("the certificate in the CA bundle is not a CA certificate")]
    NotACa,
    /// A private key does not belong to the certificate it came with.
    #[error("the {what} key does not match its certificate")]
    KeyMismatch {
        /// Which credentials failed.
        what: &'static str,
        /// The cause, from rustls' consistency check.
        #[source]
        source: rustls::Error,
    },
    /// Saving would overwrite an existing CA, whose loss would cut every node off.
    #[error("{path} already exists; refusing to overwrite a cluster CA")]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// Reading a file failed.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing a file failed.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The cluster CA: certificate and private key, both PEM.
#[derive(Clone)]
pub struct CaBundle {
    cert_pem: String,
    key_pem: String,
}

impl CaBundle {
    /// Checks and wraps a CA certificate and its PKCS#8 key.
    ///
    /// # Errors
    ///
    /// [`CertError::Unusable`] if either does not parse, [`CertError::NotACa`] if the
    /// certificate is not a CA, [`CertError::KeyMismatch`] if the key is not the
    /// certificate's.
    pub fn from_pem(cert_pem: String, key_pem: String) -> Result<Self, CertError> {
        let bundle = CaBundle { cert_pem, key_pem };
        let (params, key) = bundle.parse()?;
        if !matches!(params.is_ca, IsCa::Ca(_)) {
            return Err(CertError::NotACa);
        }
        check_key_matches(&bundle.cert_pem, &key.serialize_pem(), "CA")?;
        Ok(bundle)
    }

    /// The CA certificate, PEM: what every node trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM (PKCS#8): only the issuing machine needs it.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Writes `ca.pem` and `ca.key` (mode 0600) into `dir`, creating it (mode 0700).
    ///
    /// # Errors
    ///
    /// [`CertError::AlreadyExists`] if either file exists, [`CertError::Write`] on I/O errors.
    pub fn save(&self, dir: &Path) -> Result<(), CertError> {
        for name in [CA_CERT_FILE, CA_KEY_FILE] {
            let path = dir.join(name);
            if path.exists() {
                return Err(CertError::AlreadyExists { path });
            }
        }
        files::create_dir(dir)?;
        files::write_atomic(
            &dir.join(CA_KEY_FILE),
            self.key_pem.as_bytes(),
            files::SECRET,
        )?;
        files::write_atomic(
            &dir.join(CA_CERT_FILE),
            self.cert_pem.as_bytes(),
            files::PUBLIC,
        )
    }

    /// Reads and checks `ca.pem` and `ca.key` from `dir` (see [`CaBundle::from_pem`]).
    ///
    /// # Errors
    ///
    /// [`CertError::Read`] if a file cannot be read, else as [`CaBundle::from_pem`].
    pub fn load(dir: &Path) -> Result<Self, CertError> {
        let cert_pem = files::read(&dir.join(CA_CERT_FILE))?;
        let key_pem = files::read(&dir.join(CA_KEY_FILE))?;
        CaBundle::from_pem(cert_pem, key_pem)
    }

    /// Parses the certificate's signing parameters and the key.
    pub(crate) fn parse(&self) -> Result<(CertificateParams, KeyPair), CertError> {
        let params = CertificateParams::from_ca_cert_pem(&self.cert_pem).map_err(|source| {
            CertError::Unusable {
                what: "CA certificate",
                source,
            }
        })?;
        let key = KeyPair::from_pem(&self.key_pem).map_err(|source| CertError::Unusable {
            what: "CA key",
            source,
        })?;
        Ok((params, key))
    }
}

impl fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaBundle")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// One node's credentials: its certificate chain and private key, both PEM.
#[derive(Clone)]
pub struct NodeCredentials {
    node_name: String,
    cert_chain_pem: String,
    key_pem: String,
}

impl NodeCredentials {
    /// Checks and wraps a node's certificate chain (leaf first) and private key.
    ///
    /// # Errors
    ///
    /// [`CertError::InvalidNodeName`] for a bad name, [`CertError::InvalidPem`] if the chain
    /// or key does not parse, [`CertError::KeyMismatch`] if the key is not the leaf's.
    pub fn from_pem(
        node_name: &str,
        cert_chain_pem: String,
        key_pem: String,
    ) -> Result<Self, CertError> {
        check_node_name(node_name)?;
        check_key_matches(&cert_chain_pem, &key_pem, "node")?;
        Ok(NodeCredentials {
            node_name: node_name.to_owned(),
            cert_chain_pem,
            key_pem,
        })
    }

    /// The node's name: the common name and first DNS name of its certificate.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The certificate chain, PEM, leaf first.
    pub fn cert_chain_pem(&self) -> &str {
        &self.cert_chain_pem
    }

    /// The private key, PEM (PKCS#8).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Writes `<node>.pem` and `<node>.key` (mode 0600) into `dir`, creating it (mode 0700).
    ///
    /// Existing files are replaced atomically (write, then rename), so renewing a node's
    /// certificate never leaves a half-written file.
    ///
    /// # Errors
    ///
    /// [`CertError::Write`] on I/O errors.
    pub fn save(&self, dir: &Path) -> Result<(), CertError> {
        files::create_dir(dir)?;
        let (cert_path, key_path) = node_paths(dir, &self.node_name);
        files::write_atomic(&key_path, self.key_pem.as_bytes(), files::SECRET)?;
        files::write_atomic(&cert_path, self.cert_chain_pem.as_bytes(), files::PUBLIC)
    }

    /// Reads and checks `<node>.pem` and `<node>.key` from `dir`.
    ///
    /// # Errors
    ///
    /// [`CertError::InvalidNodeName`] for a bad name (checked before any path is built),
    /// [`CertError::Read`] if a file cannot be read, else as [`NodeCredentials::from_pem`].
    pub fn load(dir: &Path, node_name: &str) -> Result<Self, CertError> {
        check_node_name(node_name)?;
        let (cert_path, key_path) = node_paths(dir, node_name);
        let cert_chain_pem = files::read(&cert_path)?;
        let key_pem = files::read(&key_path)?;
        NodeCredentials::from_pem(node_name, cert_chain_pem, key_pem)
    }

    /// The chain as DER, leaf first.
    pub(crate) fn cert_chain_der(&self) -> Result<Vec<CertificateDer<'static>>, CertError> {
        parse_certs(&self.cert_chain_pem, "node certificate chain")
    }

    /// The private key as DER.
    pub(crate) fn key_der(&self) -> Result<PrivateKeyDer<'static>, CertError> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|source| {
            CertError::InvalidPem {
                what: "node key",
                source,
            }
        })
    }
}

impl fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCredentials")
            .field("node_name", &self.node_name)
            .field("cert_chain_pem", &self.cert_chain_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Reads only the CA certificate (`ca.pem`) from `dir`: what a node needs to verify peers.
///
/// # Errors
///
/// [`CertError::Read`] if it cannot be read, [`CertError::InvalidPem`] if it holds no
/// certificate.
pub fn load_ca_cert(dir: &Path) -> Result<String, CertError> {
    let pem = files::read(&dir.join(CA_CERT_FILE))?;
    parse_certs(&pem, "CA certificate")?;
    Ok(pem)
}

/// Generates a self-signed cluster CA named `cluster_name` (ECDSA P-256, [`CA_VALIDITY`]).
///
/// The CA may sign node certificates but no intermediate CAs (path length 0).
///
/// # Errors
///
/// [`CertError::InvalidClusterName`] for a bad name, [`CertError::Generate`] if `rcgen` fails.
pub fn generate_ca(cluster_name: &str) -> Result<CaBundle, CertError> {
    if cluster_name.is_empty()
        || cluster_name.len() > MAX_NAME_LEN
        || cluster_name.chars().any(char::is_control)
    {
        return Err(CertError::InvalidClusterName {
            name: cluster_name.to_owned(),
        });
    }
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "spheromesh");
    dn.push(DnType::CommonName, cluster_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, CA_VALIDITY);

    let key = KeyPair::generate().map_err(generate_error("CA key"))?;
    let cert = params
        .self_signed(&key)
        .map_err(generate_error("CA certificate"))?;
    Ok(CaBundle {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Issues credentials for `node_name`, signed by `ca`.
///
/// The certificate's common name is `node_name`, and its subject alternative names are
/// `node_name` followed by `sans` (DNS names and IP addresses, duplicates dropped): peers
/// connect with the node name as TLS server name. It is valid for [`NODE_VALIDITY`], or until
/// the CA expires if that is sooner, with serverAuth and clientAuth extended key usages.
///
/// # Errors
///
/// [`CertError::InvalidNodeName`] / [`CertError::InvalidSan`] for bad names,
/// [`CertError::Unusable`] if the CA does not parse, [`CertError::Generate`] if `rcgen` fails.
pub fn issue_node_cert(
    ca: &CaBundle,
    node_name: &str,
    sans: &[String],
) -> Result<NodeCredentials, CertError> {
    let (ca_params, ca_key) = ca.parse()?;
    let params = node_params(node_name, sans, NODE_VALIDITY, &ca_params)?;
    // `signed_by` takes the issuer as a `Certificate` but reads only its name, key identifier
    // and key usages; re-signing the parsed CA parameters gives exactly those, without the
    // original CA certificate's bytes (which stay what peers trust).
    let issuer = ca_params
        .self_signed(&ca_key)
        .map_err(generate_error("CA issuer"))?;

    let key = KeyPair::generate().map_err(generate_error("node key"))?;
    let cert = params
        .signed_by(&key, &issuer, &ca_key)
        .map_err(generate_error("node certificate"))?;
    Ok(NodeCredentials {
        node_name: node_name.to_owned(),
        cert_chain_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The profile of every node certificate, whether issued here or by enrolment.
///
/// Common name `node_name`; subject alternative names `node_name` then `sans` (DNS names
/// and IP addresses, duplicates dropped): peers connect with the node name as TLS server
/// name. Valid for `validity` but never past the CA (`ca_params`); serverAuth and
/// clientAuth extended key usages, no CA rights.
pub(crate) fn node_params(
    node_name: &str,
    sans: &[String],
    validity: Duration,
    ca_params: &CertificateParams,
) -> Result<CertificateParams, CertError> {
    check_node_name(node_name)?;
    let mut names = vec![node_name.to_owned()];
    for san in sans {
        if ServerName::try_from(san.as_str()).is_err() {
            return Err(CertError::InvalidSan { san: san.clone() });
        }
        if !names.contains(san) {
            names.push(san.clone());
        }
    }
    let mut params = CertificateParams::new(names).map_err(generate_error("node SANs"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, validity);
    params.not_after = params.not_after.min(ca_params.not_after);
    Ok(params)
}

/// A fresh CA and credentials for `node_name` from it, for local runs and tests.
///
/// Nothing is written to disk; a peer must share the same CA to talk to this node.
///
/// # Errors
///
/// As [`generate_ca`] and [`issue_node_cert`] (in practice only for a bad node name).
pub fn throwaway(node_name: &str) -> Result<(CaBundle, NodeCredentials), CertError> {
    let ca = generate_ca("spheromesh-throwaway")?;
    let node = issue_node_cert(&ca, node_name, &[])?;
    Ok((ca, node))
}

/// Parses every certificate in `pem`; at least one is required.
pub(crate) fn parse_certs(
    pem: &str,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| CertError::InvalidPem { what, source })?;
    if certs.is_empty() {
        return Err(CertError::InvalidPem {
            what,
            source: rustls_pki_types::pem::Error::NoItemsFound,
        });
    }
    Ok(certs)
}

/// Checks that the first certificate in `cert_pem` belongs to `key_pem`.
fn check_key_matches(cert_pem: &str, key_pem: &str, what: &'static str) -> Result<(), CertError> {
    let certs = parse_certs(cert_pem, "certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|source| {
        CertError::InvalidPem {
            what: "key",
            source,
        }
    })?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(certs, key, &provider)
        .map(drop)
        .map_err(|source| CertError::KeyMismatch { what, source })
}

/// Checks that `name` is a DNS name short enough to be a common name; this also makes it a
/// safe file name (no `/`, no empty or `..` labels).
pub(crate) fn check_node_name(name: &str) -> Result<(), CertError> {
    let is_dns_name = rustls_pki_types::DnsName::try_from(name).is_ok();
    if !is_dns_name || name.len() > MAX_NAME_LEN || name.ends_with('.') {
        return Err(CertError::InvalidNodeName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// `<dir>/<node>.pem` and `<dir>/<node>.key`.
fn node_paths(dir: &Path, node_name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{node_name}.pem")),
        dir.join(format!("{node_name}.key")),
    )
}

/// Sets the validity to `now - BACKDATE .. now + lifetime`.
///
/// Built from `rcgen::date_time_ymd` plus a `std` duration so that this crate needs no direct
/// dependency on `time`.
fn set_validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + now.saturating_sub(BACKDATE);
    params.not_after = epoch + now.saturating_add(lifetime);
}

fn generate_error(what: &'static str) -> impl Fn(rcgen::Error) -> CertError {
    move |source| CertError::Generate { what, source }
}
