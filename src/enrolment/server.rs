//! The CA service: holds the cluster CA key and signs replicas' requests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use spheromesh_mesh::security::{
    generate_ca, parse_token_list, sign_request, CaBundle, EnrolError, EnrolRequest, JoinToken,
    CA_CERT_FILE, MAX_REQUEST_PEM_LEN,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Where the CA finds the join tokens it accepts.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// One token, fixed for the life of the process (`JOIN_TOKEN`).
    Fixed(JoinToken),
    /// A token list file (`JOIN_TOKEN_FILE`), re-read on every request so that deleting a
    /// line revokes that token at once. One token per line, optionally `names=PATTERN`.
    File(PathBuf),
}

impl TokenSource {
    /// The tokens accepted now.
    ///
    /// # Errors
    ///
    /// The file cannot be read or a line is invalid.
    pub fn current(&self) -> anyhow::Result<Vec<JoinToken>> {
        match self {
            TokenSource::Fixed(token) => Ok(vec![token.clone()]),
            TokenSource::File(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the join tokens in {}", path.display()))?;
                parse_token_list(&text)
                    .with_context(|| format!("parsing the join tokens in {}", path.display()))
            }
        }
    }
}

/// Settings of `spheromesh ca serve`.
#[derive(Debug, Clone)]
pub struct CaSettings {
    /// Folder holding `ca.pem` and `ca.key`; created with a new CA when empty.
    pub dir: PathBuf,
    /// Cluster name for a new CA.
    pub cluster: String,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Lifetime of the certificates it signs.
    pub validity: Duration,
    /// The join tokens it accepts.
    pub tokens: TokenSource,
}

struct CaState {
    ca: CaBundle,
    cluster: String,
    validity: Duration,
    tokens: TokenSource,
    audit: PathBuf,
    /// One writer at a time, so lines never interleave.
    audit_lock: std::sync::Mutex<()>,
}

/// Serves the CA until `stop` is cancelled. Creates the CA in `dir` on first start.
///
/// # Errors
///
/// The CA cannot be created or read, the token source is invalid at start, or the address
/// cannot be bound.
pub async fn serve(settings: CaSettings, stop: CancellationToken) -> anyhow::Result<()> {
    let ca = load_or_create(&settings)?;
    let tokens = settings.tokens.current().context("join tokens")?;
    if tokens.is_empty() {
        warn!("no join tokens yet: every enrolment is refused until one is added");
    }
    let state = Arc::new(CaState {
        ca,
        cluster: settings.cluster.clone(),
        validity: settings.validity,
        tokens: settings.tokens,
        audit: settings.dir.join("issued.log"),
        audit_lock: std::sync::Mutex::new(()),
    });
    let app = Router::new()
        .route("/health", get(health))
        .route("/v1/enroll", post(enroll))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_PEM_LEN + 4096))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    info!(listen = %listener.local_addr()?, tokens = tokens.len(), validity = ?settings.validity, "CA serving");
    println!(
        "{}",
        serde_json::json!({"event": "ready", "ca": listener.local_addr()?.to_string()})
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        .context("serving the CA")
}

fn load_or_create(settings: &CaSettings) -> anyhow::Result<CaBundle> {
    let dir = &settings.dir;
    if dir.join(CA_CERT_FILE).exists() {
        let ca =
            CaBundle::load(dir).with_context(|| format!("reading the CA in {}", dir.display()))?;
        info!(dir = %dir.display(), "cluster CA loaded");
        return Ok(ca);
    }
    let ca = generate_ca(&settings.cluster).context("generating the cluster CA")?;
    ca.save(dir)
        .with_context(|| format!("writing the new CA to {}", dir.display()))?;
    info!(dir = %dir.display(), cluster = %settings.cluster, "cluster CA created");
    Ok(ca)
}

async fn health(State(state): State<Arc<CaState>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok", "cluster": state.cluster}))
}

async fn enroll(
    State(state): State<Arc<CaState>>,
    request: Result<Json<EnrolRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(request) = match request {
        Ok(request) => request,
        Err(rejection) => {
            return refuse(rejection.status(), "bad_request", &rejection.body_text());
        }
    };
    let tokens = match state.tokens.current() {
        Ok(tokens) => tokens,
        Err(error) => {
            warn!(
                error = format!("{error:#}"),
                "join tokens unreadable: refusing enrolment"
            );
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "tokens_unavailable",
                "the CA cannot read its join tokens",
            );
        }
    };
    let state_for_signing = Arc::clone(&state);
    let name = request.name.clone();
    // Signing is a few hundred microseconds of ECDSA; keep it off the async workers anyway.
    let signed = tokio::task::spawn_blocking(move || {
        sign_request(
            &state_for_signing.ca,
            &tokens,
            &request,
            state_for_signing.validity,
        )
    })
    .await;
    match signed {
        Ok(Ok((answer, fingerprint))) => {
            let not_after = unix_now() + state.validity.as_secs();
            info!(%name, token = %fingerprint, not_after, "certificate issued");
            audit(&state, &name, &fingerprint, not_after);
            Json(answer).into_response()
        }
        Ok(Err(error)) => {
            let (status, kind) = match &error {
                EnrolError::UnknownToken | EnrolError::MalformedMac => {
                    (StatusCode::UNAUTHORIZED, "unknown_token")
                }
                EnrolError::NameOutOfScope { .. } => (StatusCode::FORBIDDEN, "name_out_of_scope"),
                EnrolError::RequestTooLarge { .. } => {
                    (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large")
                }
                _ => (StatusCode::BAD_REQUEST, "bad_request"),
            };
            warn!(%name, %error, "enrolment refused");
            refuse(status, kind, &error.to_string())
        }
        Err(error) => {
            warn!(%error, "signing task failed");
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "signing failed",
            )
        }
    }
}

/// One line per issued certificate in `issued.log` beside the CA: the record to revoke by.
fn audit(state: &CaState, name: &str, fingerprint: &str, not_after: u64) {
    use std::io::Write;
    let line = serde_json::json!({
        "issued_at": unix_now(),
        "name": name,
        "token": fingerprint,
        "not_after": not_after,
    });
    let _one_writer = state
        .audit_lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&state.audit)
        .and_then(|mut file| file.write_all(format!("{line}\n").as_bytes()));
    if let Err(error) = written {
        warn!(%error, path = %state.audit.display(), "cannot append to the issuance log");
    }
}

fn refuse(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"error": kind, "message": message})),
    )
        .into_response()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
