//! The request loop: one `POST {target}/segment` per task, and the two ways of
//! offering load.
//!
//! - Closed loop: `concurrency` workers, each sending its next task as soon as its
//!   last one answered (what the seed's `test-ml-scaling.py` did). Latency is
//!   measured from send to answer.
//! - Open loop: requests are due on a precomputed schedule (see `arrivals`),
//!   whatever the server does. At most `concurrency` are in flight; a request
//!   that waits for a slot still has its latency measured from when it was due,
//!   so a slow server shows up in the percentiles instead of silently lowering
//!   the offered load (Tene's "coordinated omission", as wrk2 corrects it).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::ProgressBar;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::images::TestImage;
use super::Spread;

/// What one task came to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// A 200 with a well-formed answer.
    Completed {
        /// From send (or due time, open loop) to the whole answer read.
        latency: Duration,
        /// The answer's `processed_by`.
        processed_by: String,
        /// The answer's `hops` (0 when absent).
        hops: u64,
        /// The answer's `processing_time`, when present and valid.
        processing_time: Option<Duration>,
        /// Whether a 503 was retried to get here (`--retry-busy`).
        retried: bool,
    },
    /// Anything else; `kind` as [`error_kind`] and [`transport_kind`] name it.
    Failed {
        /// `busy`, `http_502`, `connect`, `timeout`, ...
        kind: String,
        /// Whether a 503 was retried before this failure.
        retried: bool,
    },
}

/// The parts of a 200 answer the report uses; the rest is ignored.
#[derive(serde::Deserialize)]
struct Answer {
    processed_by: String,
    #[serde(default)]
    hops: u64,
    processing_time: Option<f64>,
}

/// The error body of the node API.
#[derive(serde::Deserialize)]
struct ErrorBody {
    code: Option<String>,
}

/// The kind of an HTTP error answer: the JSON body's `code` when there is one,
/// else `http_<status>`.
pub(crate) fn error_kind(status: StatusCode, body: &[u8]) -> String {
    serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.code)
        .filter(|code| !code.is_empty())
        .unwrap_or_else(|| format!("http_{}", status.as_u16()))
}

/// The kind of a failure below HTTP: `timeout`, `connect` or `io`.
fn transport_kind(err: &reqwest::Error) -> &'static str {
    if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connect"
    } else {
        "io"
    }
}

/// A `Retry-After` in delta-seconds. HTTP-dates are not parsed: the node sends
/// seconds, and a date falls back to the caller's default.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Sends tasks: knows the targets, the images and the per-request options.
#[derive(Debug)]
pub(crate) struct Sender {
    pub(crate) http: reqwest::Client,
    /// A client without a connection pool, for resends after a transport failure: a pooled
    /// connection may lead to the same dead node.
    pub(crate) fresh: reqwest::Client,
    /// `{target}/segment[?threshold=..]`, one per target.
    pub(crate) urls: Vec<Url>,
    pub(crate) spread: Spread,
    pub(crate) images: Vec<TestImage>,
    pub(crate) retry_busy: bool,
    /// Send again, up to [`TRANSPORT_RESENDS`] times on a new connection, after a
    /// connection failure before any answer.
    pub(crate) retry_transport: bool,
    /// How many tasks that happened to.
    pub(crate) transport_retries: AtomicU64,
    /// Longest wait honoured for a `Retry-After` (the request timeout).
    pub(crate) max_retry_wait: Duration,
}

/// Resends of one task after transport failures, under `--retry-transport`. After a
/// kill, a DNS name with one address per replica keeps the dead one until its replacement
/// is up (about 2 s here), so a single resend may meet it again.
pub(crate) const TRANSPORT_RESENDS: u32 = 3;

/// Pause before each resend after a transport failure.
const TRANSPORT_RESEND_PAUSE: Duration = Duration::from_millis(250);

/// Longest a `Retry-After` without a usable value makes `--retry-busy` wait.
const DEFAULT_RETRY_WAIT: Duration = Duration::from_secs(1);

impl Sender {
    /// Tasks sent once more after a transport failure.
    pub(crate) fn transport_retries(&self) -> u64 {
        self.transport_retries.load(Ordering::Relaxed)
    }

    /// Sends task `index` and measures it from `due`.
    pub(crate) async fn send(&self, index: usize, due: Instant) -> Outcome {
        let url = match self.spread {
            Spread::RoundRobin => &self.urls[index % self.urls.len()],
            Spread::First => &self.urls[0],
        };
        let image = &self.images[index % self.images.len()];
        let mut retried = false;
        let mut resends = 0;
        loop {
            let client = if resends == 0 {
                &self.http
            } else {
                &self.fresh
            };
            match self.attempt(client, url, image, due).await {
                Attempt::Done(Outcome::Failed { kind, .. })
                    if self.retry_transport
                        && resends < TRANSPORT_RESENDS
                        && (kind == "connect" || kind == "io") =>
                {
                    if resends == 0 {
                        self.transport_retries.fetch_add(1, Ordering::Relaxed);
                    }
                    resends += 1;
                    tokio::time::sleep(TRANSPORT_RESEND_PAUSE).await;
                }
                Attempt::Busy { retry_after } if self.retry_busy && !retried => {
                    retried = true;
                    let wait = retry_after.unwrap_or(DEFAULT_RETRY_WAIT);
                    tokio::time::sleep(wait.min(self.max_retry_wait)).await;
                }
                // A 503 without `Retry-After` is a broken promise of the API: told apart.
                Attempt::Busy { retry_after } => {
                    let kind = if retry_after.is_some() {
                        "busy"
                    } else {
                        "busy_without_retry_after"
                    };
                    return Outcome::Failed {
                        kind: kind.to_owned(),
                        retried,
                    };
                }
                Attempt::Done(mut outcome) => {
                    let (Outcome::Completed { retried: r, .. }
                    | Outcome::Failed { retried: r, .. }) = &mut outcome;
                    *r = retried;
                    return outcome;
                }
            }
        }
    }

    async fn attempt(
        &self,
        client: &reqwest::Client,
        url: &Url,
        image: &TestImage,
        due: Instant,
    ) -> Attempt {
        let sent = client
            .post(url.clone())
            .header(CONTENT_TYPE, image.content_type)
            .body(image.bytes.to_vec())
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return Attempt::failed(transport_kind(&e)),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return Attempt::failed(transport_kind(&e)),
        };
        let latency = due.elapsed();
        if status == StatusCode::OK {
            return Attempt::Done(match serde_json::from_slice::<Answer>(&body) {
                Ok(answer) => Outcome::Completed {
                    latency,
                    processed_by: answer.processed_by,
                    hops: answer.hops,
                    processing_time: answer
                        .processing_time
                        .and_then(|s| Duration::try_from_secs_f64(s).ok()),
                    retried: false,
                },
                Err(_) => Outcome::Failed {
                    kind: "bad_response".to_owned(),
                    retried: false,
                },
            });
        }
        let kind = error_kind(status, &body);
        if status == StatusCode::SERVICE_UNAVAILABLE && kind == "busy" {
            return Attempt::Busy { retry_after };
        }
        Attempt::failed(&kind)
    }
}

/// One HTTP exchange, before the retry decision.
enum Attempt {
    /// 503 `busy`: retried once under `--retry-busy`.
    Busy {
        retry_after: Option<Duration>,
    },
    Done(Outcome),
}

impl Attempt {
    fn failed(kind: &str) -> Self {
        Attempt::Done(Outcome::Failed {
            kind: kind.to_owned(),
            retried: false,
        })
    }
}

fn tick(progress: &ProgressBar, outcome: &Outcome, failed: &AtomicUsize) {
    if matches!(outcome, Outcome::Failed { .. }) {
        let n = failed.fetch_add(1, Ordering::Relaxed) + 1;
        progress.set_message(format!("{n} failed"));
    }
    progress.inc(1);
}

/// A joined task's value; a panic in it goes on in the caller (a bug in the
/// loop must not pass for a quiet run). Nothing here aborts tasks, so there is no
/// cancellation to handle.
fn joined<T>(done: Result<T, tokio::task::JoinError>) -> Option<T> {
    match done {
        Ok(value) => Some(value),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}

/// Runs `tasks` tasks with `concurrency` workers; returns the outcomes (in no
/// particular order) and the wall time from the first send to the last answer.
pub(crate) async fn closed_loop(
    sender: Arc<Sender>,
    tasks: usize,
    concurrency: usize,
    progress: ProgressBar,
) -> (Vec<Outcome>, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.min(tasks) {
        let (sender, next, failed, progress) = (
            sender.clone(),
            next.clone(),
            failed.clone(),
            progress.clone(),
        );
        workers.spawn(async move {
            let mut outcomes = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= tasks {
                    return outcomes;
                }
                let outcome = sender.send(index, Instant::now()).await;
                tick(&progress, &outcome, &failed);
                outcomes.push(outcome);
            }
        });
    }
    let mut outcomes = Vec::with_capacity(tasks);
    while let Some(done) = workers.join_next().await {
        outcomes.extend(joined(done).into_iter().flatten());
    }
    (outcomes, start.elapsed())
}

/// Sends task `i` at `start + schedule[i]`, at most `max_in_flight` at once;
/// returns the outcomes and the wall time from the start to the last answer.
pub(crate) async fn open_loop(
    sender: Arc<Sender>,
    schedule: &[Duration],
    max_in_flight: usize,
    progress: ProgressBar,
) -> (Vec<Outcome>, Duration) {
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let failed = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut in_flight = JoinSet::new();
    for (index, offset) in schedule.iter().enumerate() {
        let due = start + *offset;
        tokio::time::sleep_until(due).await;
        // Waiting here is part of the latency: `due` is fixed above.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            unreachable!("the semaphore is never closed")
        };
        let (sender, failed, progress) = (sender.clone(), failed.clone(), progress.clone());
        in_flight.spawn(async move {
            let outcome = sender.send(index, due).await;
            drop(slot);
            tick(&progress, &outcome, &failed);
            outcome
        });
    }
    let mut outcomes = Vec::with_capacity(schedule.len());
    while let Some(done) = in_flight.join_next().await {
        outcomes.extend(joined(done));
    }
    (outcomes, start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kind_prefers_the_code() {
        let kind = |status: u16, body: &str| {
            error_kind(StatusCode::from_u16(status).unwrap(), body.as_bytes())
        };
        assert_eq!(kind(503, r#"{"error":"full","code":"busy"}"#), "busy");
        assert_eq!(
            kind(422, r#"{"error":"bad","code":"bad_image"}"#),
            "bad_image"
        );
        assert_eq!(kind(502, "<html>bad gateway</html>"), "http_502");
        assert_eq!(kind(500, r#"{"error":"no code"}"#), "http_500");
        assert_eq!(kind(500, r#"{"code":""}"#), "http_500");
        assert_eq!(kind(404, ""), "http_404");
    }

    #[test]
    fn retry_after_takes_seconds_only() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}
