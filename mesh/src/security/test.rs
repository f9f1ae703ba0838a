//! Tests of the cluster credentials and of real rustls TLS 1.3 handshakes between them, run
//! in memory: the two `rustls` connections exchange their TLS records through byte buffers,
//! with no socket and no QUIC (the QUIC transport has its own loopback tests).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{CertificateError, ClientConnection, ServerConnection};

use super::*;
use crate::protocol::ALPN;

/// Which end of the handshake failed.
#[derive(Debug, PartialEq)]
enum Side {
    Client,
    Server,
}

/// Runs a handshake between `client` (dialling `server_name`) and `server` to completion.
fn handshake(
    client: rustls::ClientConfig,
    server: rustls::ServerConfig,
    server_name: &str,
) -> Result<(ClientConnection, ServerConnection), (Side, rustls::Error)> {
    let name = ServerName::try_from(server_name.to_owned()).expect("server name");
    let mut client =
        ClientConnection::new(Arc::new(client), name).map_err(|e| (Side::Client, e))?;
    let mut server = ServerConnection::new(Arc::new(server)).map_err(|e| (Side::Server, e))?;
    for _ in 0..16 {
        let mut to_server = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut to_server).expect("write_tls");
        }
        let mut records = &to_server[..];
        while !records.is_empty() {
            server.read_tls(&mut records).expect("read_tls");
            server
                .process_new_packets()
                .map_err(|e| (Side::Server, e))?;
        }
        let mut to_client = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut to_client).expect("write_tls");
        }
        let mut records = &to_client[..];
        while !records.is_empty() {
            client.read_tls(&mut records).expect("read_tls");
            client
                .process_new_packets()
                .map_err(|e| (Side::Client, e))?;
        }
        if !client.is_handshaking() && !server.is_handshaking() && !client.wants_write() {
            return Ok((client, server));
        }
    }
    panic!("handshake did not finish");
}

fn configs(ca: &CaBundle, node: &NodeCredentials) -> (rustls::ClientConfig, rustls::ServerConfig) {
    (
        client_config(ca.cert_pem(), node).expect("client config"),
        server_config(ca.cert_pem(), node).expect("server config"),
    )
}

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let mut random = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut random);
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        TempDir(std::env::temp_dir().join(format!("spheromesh-{tag}-{suffix}")))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn same_ca_handshakes_with_alpn_and_client_certificate() {
    let ca = generate_ca("lab").expect("ca");
    let a = issue_node_cert(&ca, "node-a", &["127.0.0.1".into()]).expect("a");
    let b = issue_node_cert(&ca, "node-b", &[]).expect("b");
    let (client, _) = configs(&ca, &a);
    let (_, server) = configs(&ca, &b);
    let (client, server) = handshake(client, server, "node-b").expect("handshake");
    assert_eq!(client.alpn_protocol(), Some(ALPN));
    assert_eq!(server.alpn_protocol(), Some(ALPN));
    assert_eq!(
        client.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let presented = server.peer_certificates().expect("client certificate");
    assert_eq!(presented, a.cert_chain_der().expect("chain"));

    // The IP SAN is usable as server name too.
    let (client, _) = configs(&ca, &b);
    let (_, server) = configs(&ca, &a);
    assert!(handshake(client, server, "127.0.0.1").is_ok());
}

#[test]
fn server_refuses_a_client_certificate_from_another_ca() {
    let ca = generate_ca("lab").expect("ca");
    let server_node = issue_node_cert(&ca, "node-b", &[]).expect("b");
    // Another CA under another name: no trusted issuer. Under the same name (a forged CA):
    // the issuer name matches the trusted CA but the signature does not.
    for (intruder_ca, expected) in [
        (generate_ca("elsewhere"), CertificateError::UnknownIssuer),
        (generate_ca("lab"), CertificateError::BadSignature),
    ] {
        let intruder = issue_node_cert(&intruder_ca.expect("ca"), "node-a", &[]).expect("a");
        // The intruder trusts the real CA, so only the server's check can stop it.
        let client = client_config(ca.cert_pem(), &intruder).expect("client config");
        let (_, server) = configs(&ca, &server_node);
        let (side, err) = handshake(client, server, "node-b").expect_err("must be refused");
        assert_eq!(side, Side::Server);
        assert_eq!(err, rustls::Error::InvalidCertificate(expected));
    }
}

#[test]
fn server_refuses_a_client_without_certificate() {
    let ca = generate_ca("lab").expect("ca");
    let server_node = issue_node_cert(&ca, "node-b", &[]).expect("b");
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs::parse_certs(ca.cert_pem(), "ca").expect("ca") {
        roots.add(cert).expect("root");
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut client = client;
    client.alpn_protocols = vec![ALPN.to_vec()];
    let (_, server) = configs(&ca, &server_node);
    let (side, err) = handshake(client, server, "node-b").expect_err("must be refused");
    assert_eq!(side, Side::Server);
    assert!(
        matches!(err, rustls::Error::NoCertificatesPresented),
        "{err:?}"
    );
}

#[test]
fn client_refuses_a_server_certificate_from_another_ca() {
    let ca = generate_ca("lab").expect("ca");
    let other_ca = generate_ca("other").expect("other ca");
    let client_node = issue_node_cert(&ca, "node-a", &[]).expect("a");
    let impostor = issue_node_cert(&other_ca, "node-b", &[]).expect("impostor");
    let (client, _) = configs(&ca, &client_node);
    let server = server_config(ca.cert_pem(), &impostor).expect("server config");
    let (side, err) = handshake(client, server, "node-b").expect_err("must be refused");
    assert_eq!(side, Side::Client);
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        ),
        "{err:?}"
    );
}

#[test]
fn client_refuses_a_server_certificate_for_another_name() {
    let ca = generate_ca("lab").expect("ca");
    let a = issue_node_cert(&ca, "node-a", &[]).expect("a");
    let c = issue_node_cert(&ca, "node-c", &[]).expect("c");
    let (client, _) = configs(&ca, &a);
    let (_, server) = configs(&ca, &c);
    let (side, err) = handshake(client, server, "node-b").expect_err("must be refused");
    assert_eq!(side, Side::Client);
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })
                | rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
        ),
        "{err:?}"
    );
}

#[test]
fn credentials_survive_save_and_load_and_still_handshake() {
    let dir = TempDir::new("certs");
    let ca = generate_ca("lab").expect("ca");
    ca.save(&dir.0).expect("save ca");
    assert!(matches!(
        ca.save(&dir.0),
        Err(CertError::AlreadyExists { .. })
    ));
    let loaded_ca = CaBundle::load(&dir.0).expect("load ca");
    assert_eq!(loaded_ca.cert_pem(), ca.cert_pem());

    // Issued from the reloaded CA: must chain to the original certificate.
    let a = issue_node_cert(&loaded_ca, "node-a", &[]).expect("a");
    a.save(&dir.0).expect("save a");
    a.save(&dir.0).expect("overwrite a");
    let a = NodeCredentials::load(&dir.0, "node-a").expect("load a");
    let b = issue_node_cert(&ca, "node-b", &[]).expect("b");
    let ca_pem = load_ca_cert(&dir.0).expect("ca cert");
    let client = client_config(&ca_pem, &a).expect("client");
    let server = server_config(&ca_pem, &b).expect("server");
    assert!(handshake(client, server, "node-b").is_ok());

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for name in ["ca.key", "node-a.key"] {
            let mode = std::fs::metadata(dir.0.join(name))
                .expect("key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }
    assert!(matches!(
        NodeCredentials::load(&dir.0, "node-z"),
        Err(CertError::Read { .. })
    ));
}

#[test]
fn names_and_mismatched_keys_are_checked_up_front() {
    let ca = generate_ca("lab").expect("ca");
    for bad in [
        "",
        "../etc",
        "a/b",
        "node a",
        "-",
        "x".repeat(65).as_str(),
        "node.",
    ] {
        assert!(
            matches!(
                issue_node_cert(&ca, bad, &[]),
                Err(CertError::InvalidNodeName { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        issue_node_cert(&ca, "node-a", &["not a name".into()]),
        Err(CertError::InvalidSan { .. })
    ));
    assert!(matches!(
        generate_ca(""),
        Err(CertError::InvalidClusterName { .. })
    ));
    assert!(matches!(
        generate_ca("bad\nname"),
        Err(CertError::InvalidClusterName { .. })
    ));

    let other = generate_ca("other").expect("other");
    assert!(matches!(
        CaBundle::from_pem(ca.cert_pem().to_owned(), other.key_pem().to_owned()),
        Err(CertError::KeyMismatch { .. })
    ));
    let a = issue_node_cert(&ca, "node-a", &[]).expect("a");
    let b = issue_node_cert(&ca, "node-b", &[]).expect("b");
    assert!(matches!(
        NodeCredentials::from_pem(
            "node-a",
            a.cert_chain_pem().to_owned(),
            b.key_pem().to_owned()
        ),
        Err(CertError::KeyMismatch { .. })
    ));
    // A node certificate is not a CA.
    assert!(matches!(
        CaBundle::from_pem(a.cert_chain_pem().to_owned(), a.key_pem().to_owned()),
        Err(CertError::NotACa)
    ));
    assert!(matches!(
        server_config("no pem here", &a),
        Err(TlsError::InvalidCa(_))
    ));
}

#[test]
fn throwaway_credentials_work_and_debug_hides_keys() {
    let (ca, node) = throwaway("local").expect("throwaway");
    let (client, server) = configs(&ca, &node);
    assert!(handshake(client, server, "local").is_ok());
    assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
    assert!(!format!("{node:?}").contains("PRIVATE KEY"));
}

// ---- enrolment ---------------------------------------------------------------------------

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn enrol(
    ca: &CaBundle,
    accepted: &[JoinToken],
    replica_token: &JoinToken,
    name: &str,
) -> Result<(String, NodeCredentials), EnrolError> {
    let pending = CertificateRequest::new(name, replica_token)?;
    let (answer, _) = sign_request(
        ca,
        accepted,
        pending.request(),
        std::time::Duration::from_secs(3600),
    )?;
    pending.accept(replica_token, answer)
}

#[test]
fn an_enrolled_replica_completes_mutual_tls_with_a_hand_issued_node() {
    let ca = generate_ca("enrol").expect("ca");
    let token = JoinToken::new(TOKEN).expect("token");
    let (ca_pem, replica) =
        enrol(&ca, std::slice::from_ref(&token), &token, "a1b2c3d4e5f6").expect("enrol");
    assert_eq!(replica.node_name(), "a1b2c3d4e5f6");
    assert_eq!(ca_pem, ca.cert_pem());
    let other = issue_node_cert(&ca, "ml1", &[]).expect("issue");
    let client = client_config(&ca_pem, &replica).expect("client");
    let server = server_config(ca.cert_pem(), &other).expect("server");
    handshake(client, server, "ml1").expect("replica -> ml1");
    let client = client_config(ca.cert_pem(), &other).expect("client");
    let server = server_config(&ca_pem, &replica).expect("server");
    handshake(client, server, "a1b2c3d4e5f6").expect("ml1 -> replica");
}

#[test]
fn a_wrong_token_gets_no_certificate() {
    let ca = generate_ca("enrol").expect("ca");
    let accepted = JoinToken::new(TOKEN).expect("token");
    let wrong = JoinToken::new("ffffffffffffffffffffffffffffffff").expect("token");
    let error = enrol(&ca, &[accepted], &wrong, "ml-1").expect_err("refused");
    assert!(matches!(error, EnrolError::UnknownToken), "{error}");
    let error = enrol(&ca, &[], &wrong, "ml-1").expect_err("no tokens accepted");
    assert!(matches!(error, EnrolError::UnknownToken), "{error}");
}

#[test]
fn a_request_changed_in_transit_is_refused() {
    let ca = generate_ca("enrol").expect("ca");
    let token = JoinToken::new(TOKEN).expect("token");
    let pending = CertificateRequest::new("ml-1", &token).expect("request");
    let mut renamed = pending.request().clone();
    renamed.name = "ml-2".into();
    let validity = std::time::Duration::from_secs(60);
    let error =
        sign_request(&ca, std::slice::from_ref(&token), &renamed, validity).expect_err("renamed");
    assert!(matches!(error, EnrolError::UnknownToken), "{error}");
    // Someone else's key swapped in: the MAC no longer matches either.
    let other = CertificateRequest::new("ml-1", &token).expect("request");
    let mut swapped = pending.request().clone();
    swapped.csr_pem = other.request().csr_pem.clone();
    assert!(sign_request(&ca, std::slice::from_ref(&token), &swapped, validity).is_err());
    let mut garbled = pending.request().clone();
    garbled.mac = "zz".into();
    let error = sign_request(&ca, &[token], &garbled, validity).expect_err("garbled");
    assert!(matches!(error, EnrolError::UnknownToken), "{error}");
}

#[test]
fn an_answer_not_made_with_the_token_is_refused() {
    let ca = generate_ca("enrol").expect("ca");
    let token = JoinToken::new(TOKEN).expect("token");
    let pending = CertificateRequest::new("ml-1", &token).expect("request");
    let (mut answer, _) = sign_request(
        &ca,
        std::slice::from_ref(&token),
        pending.request(),
        std::time::Duration::from_secs(60),
    )
    .expect("signed");
    // A man in the middle substitutes his own CA: the MAC covers the CA certificate.
    answer.ca_pem = generate_ca("evil").expect("ca").cert_pem().to_owned();
    let error = pending.accept(&token, answer).expect_err("forged");
    assert!(matches!(error, EnrolError::AnswerNotAuthentic), "{error}");
}

#[test]
fn a_scoped_token_covers_only_its_names() {
    let ca = generate_ca("enrol").expect("ca");
    let token = JoinToken::new(TOKEN)
        .expect("token")
        .scoped("ml-*")
        .expect("pattern");
    enrol(&ca, std::slice::from_ref(&token), &token, "ml-7").expect("in scope");
    let error = enrol(&ca, std::slice::from_ref(&token), &token, "db-1").expect_err("out of scope");
    assert!(
        matches!(error, EnrolError::NameOutOfScope { .. }),
        "{error}"
    );
    // `ml-` itself is not covered: the `*` stands for at least one character.
    assert!(!token.permits("ml-"));
    for bad in ["ml-*-*", "a b", "", "-*"] {
        assert!(
            JoinToken::new(TOKEN).expect("token").scoped(bad).is_err(),
            "{bad:?}"
        );
    }
}

#[test]
fn token_lists_parse_scopes_and_refuse_mistakes() {
    let list = format!("# accepted tokens\n\n{TOKEN} names=ml-*\n{TOKEN}ff\n");
    let tokens = parse_token_list(&list).expect("list");
    assert_eq!(tokens.len(), 2);
    assert!(!tokens[0].permits("x") && tokens[0].permits("ml-1"));
    assert!(tokens[1].permits("x"));
    assert!(matches!(
        parse_token_list(&format!("{TOKEN} name=ml-*")),
        Err(EnrolError::UnknownField { line: 1, .. })
    ));
    assert!(matches!(
        parse_token_list("short"),
        Err(EnrolError::InvalidToken)
    ));
    assert!(JoinToken::new(&JoinToken::generate()).is_ok());
    assert_ne!(JoinToken::generate(), JoinToken::generate());
}

#[test]
fn enrolment_takes_only_the_public_key_from_the_request() {
    // A token holder asking for signing rights and extra names gets the standard node profile.
    let ca = generate_ca("enrol").expect("ca");
    let token = JoinToken::new(TOKEN).expect("token");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(vec!["ml-1".into(), "evil.example".into()]).expect("params");
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let csr_pem = params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    let request = EnrolRequest {
        name: "ml-1".into(),
        mac: super::enrolment::request_mac(&token, "ml-1", &csr_pem),
        csr_pem,
    };
    let (answer, fingerprint) = sign_request(
        &ca,
        std::slice::from_ref(&token),
        &request,
        std::time::Duration::from_secs(60),
    )
    .expect("signed");
    assert_eq!(fingerprint, token.fingerprint());
    let issued = x509_profile(&answer.cert_pem);
    assert_eq!(
        issued,
        (
            false,
            vec!["ml-1".to_owned()],
            vec![rcgen::KeyUsagePurpose::DigitalSignature]
        )
    );
}

/// Whether the certificate is a CA, its DNS names and key usages.
fn x509_profile(cert_pem: &str) -> (bool, Vec<String>, Vec<rcgen::KeyUsagePurpose>) {
    let params = rcgen::CertificateParams::from_ca_cert_pem(cert_pem).expect("parse issued");
    let names = params
        .subject_alt_names
        .iter()
        .map(|san| match san {
            rcgen::SanType::DnsName(name) => name.as_str().to_owned(),
            other => format!("{other:?}"),
        })
        .collect();
    (
        matches!(params.is_ca, rcgen::IsCa::Ca(_)),
        names,
        params.key_usages,
    )
}
