//! The result callback (contract section 3): `PUT {callbackUrl}` with the exact JSON the
//! backend validates, retried with backoff for a bounded time.
//!
//! Retried: transport errors, 5xx, 408 and 429 - the backend may come back. Not retried:
//! any other 4xx - the backend looked at the request and refused it (a deleted image, a
//! rejected body, bad credentials); sending the same bytes again cannot help.

use std::time::{Duration, Instant, SystemTime};

use rand::SeedableRng;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::StatusCode;
use serde_json::{json, Map, Value};
use tracing::{debug, warn};

use super::backoff::Backoff;
use super::config::{BrokerConfig, ConfigError};
use crate::node::TaskResult;

/// Why a callback did not get a 2xx.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallbackError {
    /// The backend answered a status that retrying cannot change.
    #[error("callback to {url} rejected with HTTP {status}")]
    Rejected {
        /// The callback URL.
        url: String,
        /// The backend's answer.
        status: u16,
    },
    /// Every attempt within the retry window failed.
    #[error("callback to {url} failed {attempts} times in {elapsed:?}: {last}")]
    GaveUp {
        /// The callback URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        elapsed: Duration,
        /// The last failure.
        last: String,
    },
}

/// Sends callbacks with the configured headers and retry window.
#[derive(Debug, Clone)]
pub(crate) struct CallbackClient {
    http: reqwest::Client,
    retry_for: Duration,
    backoff: Backoff,
}

impl CallbackClient {
    pub(crate) fn new(config: &BrokerConfig) -> Result<Self, ConfigError> {
        let mut headers = HeaderMap::new();
        if let Some(auth) = &config.callback_authorization {
            let mut value = HeaderValue::from_str(auth).map_err(|_| ConfigError::Header {
                header: "Authorization",
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .user_agent(config.callback_user_agent.clone())
            .default_headers(headers)
            .timeout(config.callback_attempt_timeout)
            .build()
            .map_err(|_| ConfigError::Header {
                header: "User-Agent",
            })?;
        Ok(Self {
            http,
            retry_for: config.callback_retry_for,
            backoff: config.callback_backoff,
        })
    }

    /// PUTs `body` to `url` until a 2xx, a non-retryable answer, or the end of the window.
    ///
    /// # Errors
    /// [`CallbackError::Rejected`] at once for a non-retryable status;
    /// [`CallbackError::GaveUp`] when the window is spent.
    pub(crate) async fn send(&self, url: &str, body: &Value) -> Result<(), CallbackError> {
        let started = Instant::now();
        let mut rng = rand::rngs::StdRng::from_entropy();
        let mut attempt: u32 = 0;
        loop {
            let last = match self.http.put(url).json(body).send().await {
                Ok(resp) if resp.status().is_success() => {
                    debug!(
                        url,
                        status = resp.status().as_u16(),
                        attempt,
                        "callback delivered"
                    );
                    return Ok(());
                }
                Ok(resp) if !retryable(resp.status()) => {
                    let status = resp.status().as_u16();
                    let text = resp.text().await.unwrap_or_default();
                    warn!(url, status, body = %truncate(&text, 200), "callback rejected");
                    return Err(CallbackError::Rejected {
                        url: url.to_owned(),
                        status,
                    });
                }
                Ok(resp) => format!("HTTP {}", resp.status().as_u16()),
                Err(e) => format!("{e}"),
            };
            attempt += 1;
            let elapsed = started.elapsed();
            let delay = self.backoff.delay(attempt - 1, &mut rng);
            if elapsed + delay >= self.retry_for {
                return Err(CallbackError::GaveUp {
                    url: url.to_owned(),
                    attempts: attempt,
                    elapsed,
                    last,
                });
            }
            warn!(url, attempt, cause = %last, retry_in = ?delay, "callback failed, retrying");
            tokio::time::sleep(delay).await;
        }
    }
}

fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The `completed` body: `{"status":"completed","result_data":{...},"parameters":{...}}`.
pub(crate) fn completed_body(result: &TaskResult, parameters: &Map<String, Value>) -> Value {
    json!({
        "status": "completed",
        "result_data": {
            "polygons": result.polygons,
            "processing_time": result.processing_time.as_secs_f64(),
            "timestamp": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "processed_by": result.processed_by,
        },
        "parameters": parameters,
    })
}

/// The `failed` body: `{"status":"failed","error":"...","parameters":{...}}`.
pub(crate) fn failed_body(error: &str, parameters: &Map<String, Value>) -> Value {
    json!({
        "status": "failed",
        "error": error,
        "parameters": parameters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result() -> TaskResult {
        TaskResult {
            polygons: json!([{"id": "polygon-00000001", "points": [{"x": 1, "y": 2}],
                              "type": "external", "class": "spheroid", "color": "#FF5733"}]),
            width: 10,
            height: 10,
            processing_time: Duration::from_millis(1500),
            processed_by: "node-b".into(),
            entry_node: "node-a".into(),
            hops: 1,
        }
    }

    #[test]
    fn completed_body_has_exactly_the_contract_shape() {
        let mut params = Map::new();
        params.insert("threshold".into(), json!(0.5));
        let b = completed_body(&result(), &params);
        let obj = b.as_object().expect("object");
        let mut keys: Vec<_> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["parameters", "result_data", "status"]);
        assert_eq!(b["status"], "completed");
        assert_eq!(b["parameters"], json!({"threshold": 0.5}));
        let rd = &b["result_data"];
        assert_eq!(rd["processing_time"], json!(1.5));
        assert_eq!(rd["processed_by"], "node-b");
        assert!(rd["polygons"].is_array());
        let ts = rd["timestamp"].as_str().expect("string");
        assert!(
            humantime::parse_rfc3339(ts).is_ok(),
            "{ts} is RFC 3339 / ISO 8601"
        );
    }

    #[test]
    fn failed_body_echoes_empty_parameters_as_an_object() {
        let b = failed_body("bad image", &Map::new());
        assert_eq!(
            b,
            json!({"status": "failed", "error": "bad image", "parameters": {}})
        );
    }

    #[test]
    fn only_transient_statuses_are_retried() {
        for s in [500, 502, 503, 504, 408, 429] {
            assert!(retryable(StatusCode::from_u16(s).expect("status")), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 422] {
            assert!(!retryable(StatusCode::from_u16(s).expect("status")), "{s}");
        }
    }
}
