//! The optional API token (`API_TOKEN` or `API_TOKEN_FILE`): when set, every route but the
//! orchestrator's probes (`/health`, `/health/live`, `/health/ready`) needs
//! `Authorization: Bearer <token>`. Browsers cannot set that header on an `EventSource`, so
//! the cluster page's routes also take `?access_token=` (RFC 6750, section 2.3). Without a
//! token the API is open, as the old service was.

use std::fmt;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};

/// Shortest token accepted: a guessable token is no protection.
pub const MIN_TOKEN_LEN: usize = 16;

/// A bearer token that requests must carry.
#[derive(Clone)]
pub struct ApiToken(String);

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(..)")
    }
}

/// A token that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Fewer than [`MIN_TOKEN_LEN`] characters.
    #[error("the API token must have at least {MIN_TOKEN_LEN} characters, it has {0}")]
    TooShort(usize),
    /// Characters an HTTP header cannot carry, or spaces.
    #[error("the API token may only hold visible ASCII characters without spaces")]
    BadCharacters,
}

impl ApiToken {
    /// Validates `token` (surrounding whitespace, e.g. a file's newline, is dropped).
    ///
    /// # Errors
    ///
    /// The [`TokenError`] of the broken rule.
    pub fn new(token: &str) -> Result<Self, TokenError> {
        let token = token.trim();
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::BadCharacters);
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort(token.len()));
        }
        Ok(Self(token.to_owned()))
    }

    fn matches(&self, candidate: &str) -> bool {
        self.0.as_bytes().ct_eq(candidate.as_bytes()).into()
    }
}

/// Paths that stay open with a token set: orchestrators probe them without credentials.
fn is_open(path: &str) -> bool {
    matches!(path, "/health" | "/health/live" | "/health/ready")
}

/// The middleware: passes the request on, or answers 401 JSON.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &state.api_token else {
        return next.run(request).await;
    };
    if is_open(request.uri().path()) {
        return next.run(request).await;
    }
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let from_query = request.uri().path().starts_with("/dashboard").then(|| {
        request.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|pair| pair.strip_prefix("access_token="))
        })
    });
    let presented = bearer.or(from_query.flatten());
    if presented.is_some_and(|p| token.matches(p)) {
        return next.run(request).await;
    }
    let mut response = ApiError::unauthorized().into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"spheromesh\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_validated_and_compared_exactly() {
        assert_eq!(ApiToken::new("short").err(), Some(TokenError::TooShort(5)));
        assert_eq!(
            ApiToken::new("with a space in it!!").err(),
            Some(TokenError::BadCharacters)
        );
        let token = ApiToken::new("  0123456789abcdef\n").expect("valid");
        assert!(token.matches("0123456789abcdef"));
        assert!(!token.matches("0123456789abcdeF"));
        assert!(!token.matches("0123456789abcde"));
        assert!(
            !format!("{token:?}").contains("0123"),
            "Debug hides the token"
        );
        assert!(is_open("/health/ready") && !is_open("/metrics") && !is_open("/segment"));
    }
}
