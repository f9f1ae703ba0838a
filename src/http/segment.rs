//! `POST /segment`: an image as the raw body (`image/*`, `application/octet-stream`), as the
//! multipart field `image`, or as JSON `{"image_path": ...}` naming a file under the uploads
//! root. Query: `threshold` (default 0.5), `simplify` (pixels), `timeout_ms`.

use std::time::{Duration, Instant, SystemTime};

use super::error::ApiError;
use super::schema::{ErrorBody, PathRequest, SegmentQuery, SegmentResponse, SegmentUpload};
use super::AppState;
use crate::node::metrics;
use crate::node::{Policy, SegmentTask, TaskError};
use crate::uploads::PathError;
use axum::body::{to_bytes, Body};
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::Json;

/// Shortest `timeout_ms` a request may ask for.
const MIN_TIMEOUT_MS: u64 = 1000;

/// Extra bytes allowed on top of the image limit for multipart framing and JSON.
const ENVELOPE_BYTES: usize = 64 * 1024;

/// Segments one image: outlines of spheroids and their holes.
#[utoipa::path(post, path = "/segment", tag = "segmentation",
    params(SegmentQuery),
    request_body(description = "The image: raw bytes, a multipart field `image`, or JSON naming a file under the uploads root",
        content(
            (Vec<u8> = "image/png"),
            (Vec<u8> = "image/jpeg"),
            (Vec<u8> = "image/tiff"),
            (Vec<u8> = "application/octet-stream"),
            (SegmentUpload = "multipart/form-data"),
            (PathRequest = "application/json"),
        )),
    responses(
        (status = 200, description = "Segmented", body = SegmentResponse),
        (status = 400, description = "Malformed request (query, body, multipart)", body = ErrorBody),
        (status = 401, description = "API token missing or wrong (only when the node has one)", body = ErrorBody),
        (status = 403, description = "`image_path` leaves the uploads root", body = ErrorBody),
        (status = 404, description = "`image_path` names no file", body = ErrorBody),
        (status = 413, description = "Image or body above the size limit", body = ErrorBody),
        (status = 415, description = "Unsupported content type or image format", body = ErrorBody),
        (status = 422, description = "Not a decodable image", body = ErrorBody),
        (status = 503, description = "No node has room, or this node drains: retry after `Retry-After` seconds", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "This node cannot do its part (e.g. its uploads root is unusable)", body = ErrorBody),
        (status = 504, description = "The deadline passed before a node finished", body = ErrorBody),
    ))]
pub(crate) async fn segment(
    State(state): State<AppState>,
    query: Result<Query<SegmentQuery>, QueryRejection>,
    request: Request,
) -> Result<Json<SegmentResponse>, ApiError> {
    let received = Instant::now();
    let Query(query) = query.map_err(|rejection| {
        ApiError::bad_request(format!("invalid query string: {}", rejection.body_text()))
    })?;
    validate_query(&query)?;
    let max_bytes = state.dispatcher.executor().engine().limits().max_bytes;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if announced.is_some_and(|n| n > max_bytes + ENVELOPE_BYTES) {
        return Err(TaskError::TooLarge(format!(
            "the request body is {} bytes, more than the limit of {max_bytes} bytes",
            announced.unwrap_or_default()
        ))
        .into());
    }
    // Refuse before reading the body: a full mesh or a full body budget answers at once.
    let held = if content_type.starts_with("application/json") {
        max_bytes
    } else {
        announced.unwrap_or(max_bytes + ENVELOPE_BYTES)
    };
    let held = u32::try_from(held.max(1)).unwrap_or(u32::MAX);
    let permit = std::sync::Arc::clone(&state.body_budget).try_acquire_many_owned(held);
    let Ok(_body_permit) = permit else {
        discard_body(request.into_body(), max_bytes + ENVELOPE_BYTES).await;
        return Err(busy(&state));
    };
    if !state.dispatcher.has_room_anywhere() {
        metrics::record_busy();
        discard_body(request.into_body(), max_bytes + ENVELOPE_BYTES).await;
        return Err(busy(&state));
    }
    let mut threshold = query.threshold.map(check_threshold).transpose()?;
    let image = if content_type.starts_with("multipart/form-data") {
        multipart_image(request, &state, max_bytes).await?
    } else if content_type.starts_with("application/json") {
        let body = read_body(request.into_body(), ENVELOPE_BYTES).await?;
        let parsed: PathRequest = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
        if parsed.image_path.trim().is_empty() {
            return Err(ApiError::bad_request("image_path is empty"));
        }
        if threshold.is_none() {
            threshold = parsed.threshold.map(check_threshold).transpose()?;
        }
        read_upload(&state, &parsed.image_path).await?
    } else if content_type.is_empty()
        || content_type.starts_with("image/")
        || content_type.starts_with("application/octet-stream")
    {
        read_body(request.into_body(), max_bytes).await?
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "content type {content_type:?}: send the image as image/*, multipart field \
                 \"image\", or JSON {{\"image_path\": ...}}"
            ),
        ));
    };
    let timeout = query
        .timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(state.request_timeout)
        .min(state.request_timeout);
    let task = SegmentTask {
        task_id: uuid::Uuid::new_v4().to_string(),
        image,
        threshold: threshold.unwrap_or(0.5),
        simplify_tolerance: query.simplify,
        deadline: received + timeout,
    };
    let task_id = task.task_id.clone();
    let result = state.dispatcher.place(task, Policy::Fastest).await?;
    metrics::record_http(200);
    Ok(Json(SegmentResponse {
        task_id,
        polygons: result.polygons,
        processing_time: result.processing_time.as_secs_f64(),
        processed_by: result.processed_by,
        entry_node: result.entry_node,
        hops: result.hops,
        image_width: result.width,
        image_height: result.height,
        timestamp: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
    }))
}

/// A threshold strictly between 0 and 1, as the engine's `f32` (a value too close to 0 or
/// 1 for `f32` becomes the nearest `f32` inside the range, not the bound itself).
fn check_threshold(t: f64) -> Result<f32, ApiError> {
    if t > 0.0 && t < 1.0 {
        Ok((t as f32).clamp(f32::MIN_POSITIVE, 1.0 - f32::EPSILON / 2.0))
    } else {
        Err(ApiError::bad_request(format!(
            "threshold must be strictly between 0 and 1, got {t}"
        )))
    }
}

/// Refuses query values the schema excludes, before any body is read.
fn validate_query(query: &SegmentQuery) -> Result<(), ApiError> {
    if let Some(t) = query.threshold {
        check_threshold(t)?;
    }
    if let Some(s) = query.simplify {
        if !(s >= 0.0 && s.is_finite()) {
            return Err(ApiError::bad_request(format!(
                "simplify must be a finite number of pixels at least 0, got {s}"
            )));
        }
    }
    if let Some(ms) = query.timeout_ms.filter(|&ms| ms < MIN_TIMEOUT_MS) {
        return Err(ApiError::bad_request(format!(
            "timeout_ms must be at least {MIN_TIMEOUT_MS}, got {ms}"
        )));
    }
    Ok(())
}

/// Reads and drops a refused request's body one frame at a time (memory stays at one
/// frame): a client still sending gets the 503 instead of a reset connection.
async fn discard_body(body: Body, limit: usize) {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut seen = 0usize;
    while seen <= limit {
        match body.frame().await {
            Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
}

fn busy(state: &AppState) -> ApiError {
    TaskError::Busy {
        retry_after: state.dispatcher.retry_after(),
    }
    .into()
}

async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    match to_bytes(body, limit).await {
        Ok(bytes) => Ok(bytes.to_vec()),
        Err(error) if is_length_limit(&error) => Err(TaskError::TooLarge(format!(
            "the request body is larger than the limit of {limit} bytes"
        ))
        .into()),
        Err(error) => Err(ApiError::bad_request(format!(
            "cannot read the body: {error}"
        ))),
    }
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// The one field `image` of a multipart body; a missing image or any other field is 400.
async fn multipart_image(
    request: Request,
    state: &AppState,
    max_bytes: usize,
) -> Result<Vec<u8>, ApiError> {
    let mut multipart = Multipart::from_request(request, state)
        .await
        .map_err(|e| ApiError::bad_request(format!("invalid multipart body: {e}")))?;
    let unexpected = |name: Option<&str>| {
        ApiError::bad_request(format!(
            "unexpected multipart field {:?}: send the image as the only field, \"image\"",
            name.unwrap_or_default()
        ))
    };
    let Some(field) = multipart.next_field().await.map_err(multipart_error)? else {
        return Err(ApiError::bad_request(
            "multipart body has no field named \"image\"",
        ));
    };
    if field.name() != Some("image") {
        return Err(unexpected(field.name()));
    }
    let bytes = field.bytes().await.map_err(multipart_error)?;
    if bytes.len() > max_bytes {
        return Err(TaskError::TooLarge(format!(
            "the image is {} bytes, more than the limit of {max_bytes} bytes",
            bytes.len()
        ))
        .into());
    }
    if let Some(extra) = multipart.next_field().await.map_err(multipart_error)? {
        return Err(unexpected(extra.name()));
    }
    Ok(bytes.to_vec())
}

fn multipart_error(error: axum::extract::multipart::MultipartError) -> ApiError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        TaskError::TooLarge(error.body_text()).into()
    } else {
        ApiError::bad_request(format!("invalid multipart body: {}", error.body_text()))
    }
}

async fn read_upload(state: &AppState, path: &str) -> Result<Vec<u8>, ApiError> {
    let Some(root) = &state.uploads_root else {
        return Err(ApiError::bad_request(
            "this node has no uploads root configured",
        ));
    };
    root.read(path).await.map_err(|e| {
        let (status, code) = match &e {
            PathError::Escapes { .. } => (StatusCode::FORBIDDEN, "path_outside_uploads_root"),
            PathError::NotFound { .. } | PathError::NotAFile { .. } => {
                (StatusCode::NOT_FOUND, "image_not_found")
            }
            PathError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "uploads_unavailable"),
        };
        ApiError::new(status, code, e.to_string())
    })
}
