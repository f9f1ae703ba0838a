//! Errors as the HTTP API answers them: JSON `{"error": ..., "code": ...}` with a status
//! that says who must act, and `Retry-After` when waiting helps.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::schema::ErrorBody;
use crate::node::metrics;
use crate::node::TaskError;

/// An error answer of the HTTP API.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// The same error, telling the client to wait `secs` seconds (`Retry-After`).
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// 401: the API token is missing or wrong.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this node requires an API token: send Authorization: Bearer <token>",
        )
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
}

impl From<TaskError> for ApiError {
    fn from(error: TaskError) -> Self {
        let status = match &error {
            TaskError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            TaskError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            TaskError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            TaskError::BadImage(_) => StatusCode::UNPROCESSABLE_ENTITY,
            TaskError::Busy { .. } | TaskError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            TaskError::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            TaskError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let retry_after_secs = match &error {
            TaskError::Busy { retry_after } => Some(retry_after.as_secs().max(1)),
            TaskError::ShuttingDown => Some(1),
            _ => None,
        };
        Self {
            status,
            code: error.code(),
            message: error.to_string(),
            retry_after_secs,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::record_http(self.status.as_u16());
        let body = Json(ErrorBody {
            error: self.message,
            code: self.code.to_owned(),
        });
        let mut response = (self.status, body).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
