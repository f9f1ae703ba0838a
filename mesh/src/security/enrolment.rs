//! Enrolment: identical replicas get a certificate for their own instance id from the
//! cluster CA, by proving they hold a join token.
//!
//! The replica makes its own key pair and a certificate signing request (RFC 2986) for its
//! name ([`CertificateRequest::new`]); the private key never leaves it. The CA, which alone
//! holds the CA key, checks the request against the join tokens it accepts and signs a
//! certificate with the same profile as [`issue_node_cert`](super::issue_node_cert)
//! ([`sign_request`]). The CA takes only the public key from the request (whose signature
//! proves the requester holds the private key); name, usages and lifetime are its own.
//!
//! The token itself never crosses the network: the request carries an HMAC-SHA256
//! (RFC 2104) over the name and the request, keyed by the token, and the answer carries one
//! over the CA certificate, the issued certificate and the request. So an eavesdropper learns
//! no token, a replayed request only yields a certificate for a key the replayer lacks, and a
//! replica accepts an answer only from someone holding its token: no CA fingerprint needs
//! distributing. A token is scoped by a name pattern ([`JoinToken::permits`]); the CA
//! re-reads its token list on every request, so removing a token revokes it at once.
//!
//! Nothing here opens sockets; the binary serves and calls this over HTTP.

use std::fmt;
use std::time::Duration;

use hmac::{Hmac, Mac};
use rcgen::{CertificateParams, CertificateSigningRequestParams, KeyPair};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::certs::{check_node_name, node_params, CaBundle, CertError, NodeCredentials};

type HmacSha256 = Hmac<Sha256>;

/// Shortest accepted join token: 32 visible ASCII characters (128 bits as hex and more).
pub const MIN_TOKEN_LEN: usize = 32;

/// Longest accepted certificate request, in bytes of PEM.
pub const MAX_REQUEST_PEM_LEN: usize = 8 * 1024;

const REQUEST_DOMAIN: &[u8] = b"spheromesh-enrol-request-v1";
const ANSWER_DOMAIN: &[u8] = b"spheromesh-enrol-answer-v1";

/// Why enrolment failed, on either side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrolError {
    /// A join token is too short or has characters other than visible ASCII.
    #[error("invalid join token: must be at least {MIN_TOKEN_LEN} visible ASCII characters")]
    InvalidToken,
    /// A token line's name pattern is not `*`, a DNS name, or one with a single `*`.
    #[error("invalid name pattern {pattern:?}: a DNS name with at most one `*`")]
    InvalidPattern {
        /// The rejected pattern.
        pattern: String,
    },
    /// A token-list line has an unknown field.
    #[error("token list line {line}: unknown field {field:?} (expected `names=PATTERN`)")]
    UnknownField {
        /// 1-based line number.
        line: usize,
        /// The field.
        field: String,
    },
    /// No accepted token produced the request's MAC.
    #[error("no accepted join token matches the request")]
    UnknownToken,
    /// The token is valid but does not cover the requested name.
    #[error("the join token does not cover the name {name:?}")]
    NameOutOfScope {
        /// The requested name.
        name: String,
    },
    /// The request is larger than [`MAX_REQUEST_PEM_LEN`].
    #[error("certificate request too large ({len} bytes, at most {MAX_REQUEST_PEM_LEN})")]
    RequestTooLarge {
        /// Its size.
        len: usize,
    },
    /// The request does not parse or its signature does not verify.
    #[error("invalid certificate request")]
    InvalidRequest(#[source] rcgen::Error),
    /// The MAC is not hex of the right length.
    #[error("malformed MAC")]
    MalformedMac,
    /// The answer's MAC does not verify: it did not come from a holder of our token.
    #[error("the CA's answer is not authenticated by the join token")]
    AnswerNotAuthentic,
    /// Certificates could not be made, parsed or checked.
    #[error(transparent)]
    Cert(#[from] CertError),
}

/// A join token: a shared secret that lets a replica enrol, optionally scoped to names.
#[derive(Clone)]
pub struct JoinToken {
    secret: String,
    pattern: NamePattern,
}

impl JoinToken {
    /// A token covering every name.
    ///
    /// # Errors
    ///
    /// [`EnrolError::InvalidToken`] if it is shorter than [`MIN_TOKEN_LEN`] or not visible
    /// ASCII (surrounding whitespace is ignored).
    pub fn new(secret: &str) -> Result<Self, EnrolError> {
        let secret = secret.trim();
        if secret.len() < MIN_TOKEN_LEN || !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(EnrolError::InvalidToken);
        }
        Ok(JoinToken {
            secret: secret.to_owned(),
            pattern: NamePattern::Any,
        })
    }

    /// A fresh random token: 64 hex digits (256 bits).
    pub fn generate() -> String {
        let bytes: [u8; 32] = rand::random();
        hex(&bytes)
    }

    /// Restricts the token to names matching `pattern` (`*`, `ml-*`, `*.workers`, `ml-7`).
    ///
    /// # Errors
    ///
    /// [`EnrolError::InvalidPattern`] unless the pattern, with its `*` replaced by a letter,
    /// is a valid node name and has at most one `*`.
    pub fn scoped(mut self, pattern: &str) -> Result<Self, EnrolError> {
        self.pattern = NamePattern::parse(pattern)?;
        Ok(self)
    }

    /// Whether this token may enrol `name`.
    pub fn permits(&self, name: &str) -> bool {
        self.pattern.matches(name)
    }

    /// A short public fingerprint (first 8 bytes of SHA-256, hex) for logs and audit lines.
    pub fn fingerprint(&self) -> String {
        hex(&Sha256::digest(self.secret.as_bytes())[..8])
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(self.secret.as_bytes()).expect("HMAC takes keys of any length")
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("fingerprint", &self.fingerprint())
            .field("pattern", &self.pattern)
            .finish()
    }
}

/// Parses a token list: one token per line, optionally followed by `names=PATTERN`; blank
/// lines and lines starting with `#` are skipped.
///
/// # Errors
///
/// The first bad line's error.
pub fn parse_token_list(text: &str) -> Result<Vec<JoinToken>, EnrolError> {
    let mut tokens = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut token = JoinToken::new(fields.next().unwrap_or_default())?;
        for field in fields {
            match field.strip_prefix("names=") {
                Some(pattern) => token = token.scoped(pattern)?,
                None => {
                    return Err(EnrolError::UnknownField {
                        line: index + 1,
                        field: field.to_owned(),
                    })
                }
            }
        }
        tokens.push(token);
    }
    Ok(tokens)
}

/// Names a token covers: all, or those matching a pattern with at most one `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NamePattern {
    Any,
    Glob { prefix: String, suffix: String },
    Exact(String),
}

impl NamePattern {
    fn parse(pattern: &str) -> Result<Self, EnrolError> {
        let invalid = || EnrolError::InvalidPattern {
            pattern: pattern.to_owned(),
        };
        if pattern == "*" {
            return Ok(NamePattern::Any);
        }
        if pattern.matches('*').count() > 1 || check_node_name(&pattern.replace('*', "x")).is_err()
        {
            return Err(invalid());
        }
        Ok(match pattern.split_once('*') {
            Some((prefix, suffix)) => NamePattern::Glob {
                prefix: prefix.to_owned(),
                suffix: suffix.to_owned(),
            },
            None => NamePattern::Exact(pattern.to_owned()),
        })
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Any => true,
            NamePattern::Exact(exact) => name == exact,
            NamePattern::Glob { prefix, suffix } => {
                name.len() > prefix.len() + suffix.len()
                    && name.starts_with(prefix.as_str())
                    && name.ends_with(suffix.as_str())
            }
        }
    }
}

/// What a replica sends the CA: its name, its certificate request and a MAC by its token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnrolRequest {
    /// The instance id the certificate is for.
    pub name: String,
    /// PEM certificate signing request, signed by the replica's new key.
    pub csr_pem: String,
    /// Hex HMAC-SHA256 of the name and request under the join token.
    pub mac: String,
}

/// What the CA answers: the CA certificate(s), the issued certificate and a MAC by the token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnrolAnswer {
    /// The cluster CA certificate(s) peers chain to, PEM.
    pub ca_pem: String,
    /// The replica's new certificate, PEM.
    pub cert_pem: String,
    /// Hex HMAC-SHA256 of both certificates and the request under the join token.
    pub mac: String,
}

/// A replica's pending enrolment: its new key and the request to send.
pub struct CertificateRequest {
    name: String,
    key_pem: String,
    request: EnrolRequest,
}

impl fmt::Debug for CertificateRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateRequest")
            .field("name", &self.name)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl CertificateRequest {
    /// Makes a new ECDSA P-256 key and a signed request for `name`, authenticated by `token`.
    ///
    /// # Errors
    ///
    /// [`CertError::InvalidNodeName`] for a bad name, [`CertError::Generate`] if `rcgen`
    /// fails.
    pub fn new(name: &str, token: &JoinToken) -> Result<Self, EnrolError> {
        check_node_name(name)?;
        let key = KeyPair::generate().map_err(generate_error("enrolment key"))?;
        let params =
            CertificateParams::new(vec![name.to_owned()]).map_err(generate_error("request"))?;
        let csr_pem = params
            .serialize_request(&key)
            .and_then(|csr| csr.pem())
            .map_err(generate_error("certificate request"))?;
        let mac = request_mac(token, name, &csr_pem);
        Ok(CertificateRequest {
            name: name.to_owned(),
            key_pem: key.serialize_pem(),
            request: EnrolRequest {
                name: name.to_owned(),
                csr_pem,
                mac,
            },
        })
    }

    /// The request to send to the CA.
    pub fn request(&self) -> &EnrolRequest {
        &self.request
    }

    /// Checks the CA's answer and returns the CA certificate(s) and this replica's
    /// credentials.
    ///
    /// # Errors
    ///
    /// [`EnrolError::AnswerNotAuthentic`] if the answer's MAC is wrong, [`EnrolError::Cert`]
    /// if the certificate does not parse or is not for this key.
    pub fn accept(
        self,
        token: &JoinToken,
        answer: EnrolAnswer,
    ) -> Result<(String, NodeCredentials), EnrolError> {
        let expected = answer_mac(token, &answer.ca_pem, &answer.cert_pem, &self.request);
        verify_mac(expected, &answer.mac).map_err(|_| EnrolError::AnswerNotAuthentic)?;
        super::certs::parse_certs(&answer.ca_pem, "enrolment CA certificate")?;
        let credentials = NodeCredentials::from_pem(&self.name, answer.cert_pem, self.key_pem)?;
        Ok((answer.ca_pem, credentials))
    }
}

/// The CA side: finds the token that authenticates `request`, checks the name against its
/// scope and signs a node certificate valid for `validity` (at most until the CA expires).
///
/// Returns the answer and the fingerprint of the token used (for the audit log).
///
/// # Errors
///
/// [`EnrolError::UnknownToken`], [`EnrolError::NameOutOfScope`],
/// [`EnrolError::RequestTooLarge`], [`EnrolError::InvalidRequest`], or a
/// [`CertError`] for a bad name or an unusable CA.
pub fn sign_request(
    ca: &CaBundle,
    tokens: &[JoinToken],
    request: &EnrolRequest,
    validity: Duration,
) -> Result<(EnrolAnswer, String), EnrolError> {
    if request.csr_pem.len() > MAX_REQUEST_PEM_LEN {
        return Err(EnrolError::RequestTooLarge {
            len: request.csr_pem.len(),
        });
    }
    let token = tokens
        .iter()
        .find(|token| {
            verify_mac(
                request_mac(token, &request.name, &request.csr_pem),
                &request.mac,
            )
            .is_ok()
        })
        .ok_or(EnrolError::UnknownToken)?;
    check_node_name(&request.name)?;
    if !token.permits(&request.name) {
        return Err(EnrolError::NameOutOfScope {
            name: request.name.clone(),
        });
    }
    let csr = CertificateSigningRequestParams::from_pem(&request.csr_pem)
        .map_err(EnrolError::InvalidRequest)?;
    let (ca_params, ca_key) = ca.parse()?;
    let params = node_params(&request.name, &[], validity, &ca_params)?;
    let issuer = ca_params
        .self_signed(&ca_key)
        .map_err(generate_error("CA issuer"))?;
    let cert = CertificateSigningRequestParams {
        params,
        public_key: csr.public_key,
    }
    .signed_by(&issuer, &ca_key)
    .map_err(generate_error("node certificate"))?;
    let ca_pem = ca.cert_pem().to_owned();
    let cert_pem = cert.pem();
    let mac = answer_mac(token, &ca_pem, &cert_pem, request);
    Ok((
        EnrolAnswer {
            ca_pem,
            cert_pem,
            mac,
        },
        token.fingerprint(),
    ))
}

pub(super) fn request_mac(token: &JoinToken, name: &str, csr_pem: &str) -> String {
    let mut mac = token.mac();
    for part in [REQUEST_DOMAIN, name.as_bytes(), csr_pem.as_bytes()] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    hex(&mac.finalize().into_bytes())
}

fn answer_mac(token: &JoinToken, ca_pem: &str, cert_pem: &str, request: &EnrolRequest) -> String {
    let mut mac = token.mac();
    for part in [
        ANSWER_DOMAIN,
        ca_pem.as_bytes(),
        cert_pem.as_bytes(),
        request.name.as_bytes(),
        request.csr_pem.as_bytes(),
    ] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    hex(&mac.finalize().into_bytes())
}

/// Compares in constant time (both sides are hex of 32 bytes).
fn verify_mac(expected_hex: String, got_hex: &str) -> Result<(), EnrolError> {
    let got = unhex(got_hex).ok_or(EnrolError::MalformedMac)?;
    let expected = unhex(&expected_hex).ok_or(EnrolError::MalformedMac)?;
    if got.len() != expected.len() {
        return Err(EnrolError::MalformedMac);
    }
    let diff = got
        .iter()
        .zip(&expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff == 0 {
        Ok(())
    } else {
        Err(EnrolError::UnknownToken)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

fn generate_error(what: &'static str) -> impl Fn(rcgen::Error) -> CertError {
    move |source| CertError::Generate { what, source }
}
