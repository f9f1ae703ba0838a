//! What a load test found: built from the outcomes of the measured phase, printed
//! as a table for people or as one JSON object for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::client::Outcome;
use super::stats::{self, LatencySummary, Share};

/// The result of a load test. Its JSON form (`--json`) is the serde form of this
/// struct; field names are stable for scripts.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The node base URLs, as given.
    pub targets: Vec<String>,
    /// `round-robin` or `first`.
    pub spread: String,
    /// `closed`, `poisson` or `fixed`.
    pub mode: String,
    /// Closed loop: workers; open loop: most requests in flight.
    pub concurrency: usize,
    /// Open loop: offered arrivals per second.
    pub rate_per_s: Option<f64>,
    /// Distinct images sent, in turn.
    pub images: usize,
    /// Tasks run before the measured phase and left out of every number below.
    pub warmup: usize,
    /// Tasks of the measured phase.
    pub tasks: usize,
    /// Tasks answered 200 with a well-formed result.
    pub completed: u64,
    /// Tasks that failed, whatever the kind.
    pub failed: u64,
    /// Wall time of the measured phase: first send (or its start, open loop) to
    /// the last answer.
    pub wall_time_s: f64,
    /// `completed` per minute of `wall_time_s`.
    pub tasks_per_min: f64,
    /// Latency of the completed tasks as the client saw it; `null` when none.
    pub latency: Option<LatencySummary>,
    /// `processing_time` the nodes reported for the completed tasks.
    pub processing_time: Option<LatencySummary>,
    /// Failed tasks by kind: the answer's `code`, else `http_<status>`; `connect`,
    /// `timeout` and `io` below HTTP; `bad_response` for a 200 that isn't a result;
    /// `busy_without_retry_after` for a 503 `busy` that did not say when to retry.
    pub errors: BTreeMap<String, u64>,
    /// Completed tasks per node id (`processed_by`) and the share of each.
    pub processed_by: BTreeMap<String, Share>,
    /// Completed tasks that ran on another node than the one they entered (`hops > 0`).
    pub forwarded: u64,
    /// Tasks that got a 503 `busy` and were sent again (`--retry-busy`).
    pub retried_busy: u64,
    /// Tasks sent again after their connection failed or broke (`--retry-transport`).
    pub retried_transport: u64,
}

/// The settings a report repeats next to its numbers.
#[derive(Debug, Clone)]
pub(crate) struct RunInfo {
    pub(crate) targets: Vec<String>,
    pub(crate) spread: String,
    pub(crate) mode: String,
    pub(crate) concurrency: usize,
    pub(crate) rate_per_s: Option<f64>,
    pub(crate) images: usize,
    pub(crate) warmup: usize,
}

impl Report {
    /// Summarises the measured phase.
    pub(crate) fn new(info: RunInfo, outcomes: &[Outcome], wall: Duration) -> Self {
        let mut latencies = Vec::new();
        let mut processing = Vec::new();
        let mut nodes = Vec::new();
        let mut kinds = Vec::new();
        let (mut forwarded, mut retried_busy) = (0, 0);
        for outcome in outcomes {
            match outcome {
                Outcome::Completed {
                    latency,
                    processed_by,
                    hops,
                    processing_time,
                    retried,
                } => {
                    latencies.push(*latency);
                    processing.extend(*processing_time);
                    nodes.push(processed_by.as_str());
                    forwarded += u64::from(*hops > 0);
                    retried_busy += u64::from(*retried);
                }
                Outcome::Failed { kind, retried } => {
                    kinds.push(kind.as_str());
                    retried_busy += u64::from(*retried);
                }
            }
        }
        let completed = latencies.len() as u64;
        Self {
            targets: info.targets,
            spread: info.spread,
            mode: info.mode,
            concurrency: info.concurrency,
            rate_per_s: info.rate_per_s,
            images: info.images,
            warmup: info.warmup,
            tasks: outcomes.len(),
            completed,
            failed: kinds.len() as u64,
            wall_time_s: wall.as_secs_f64(),
            tasks_per_min: stats::per_minute(completed, wall),
            latency: LatencySummary::from_samples(latencies),
            processing_time: LatencySummary::from_samples(processing),
            errors: stats::tally(kinds),
            processed_by: stats::shares(nodes),
            forwarded,
            retried_busy,
            retried_transport: 0,
        }
    }

    /// The report as one line of JSON.
    ///
    /// # Errors
    ///
    /// Only if serialisation fails, which plain numbers and strings don't.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// The report as an aligned text table for a terminal.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let mut row = |label: &str, value: String| {
            let line = format!("{label:<14} {value}");
            let _ = writeln!(out, "{}", line.trim_end());
        };
        row(
            "targets",
            format!("{} ({})", self.targets.join(", "), self.spread),
        );
        row(
            "load",
            match self.rate_per_s {
                Some(rate) => format!(
                    "open loop, {} arrivals at {rate}/s, at most {} in flight",
                    self.mode, self.concurrency
                ),
                None => format!("closed loop, {} workers", self.concurrency),
            },
        );
        row(
            "tasks",
            format!(
                "{} sent, {} completed, {} failed ({} images; {} warmup tasks not counted)",
                self.tasks, self.completed, self.failed, self.images, self.warmup
            ),
        );
        row("wall time", format!("{:.2} s", self.wall_time_s));
        row("throughput", format!("{:.1} tasks/min", self.tasks_per_min));
        row("latency", summary_line(self.latency.as_ref()));
        row("node time", summary_line(self.processing_time.as_ref()));
        row(
            "forwarded",
            format!(
                "{} of {} completed (hops > 0)",
                self.forwarded, self.completed
            ),
        );
        if self.retried_busy > 0 {
            row("retried busy", self.retried_busy.to_string());
        }
        if self.retried_transport > 0 {
            row("retried transport", self.retried_transport.to_string());
        }
        let errors = if self.errors.is_empty() {
            "none".to_owned()
        } else {
            let parts: Vec<_> = self
                .errors
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            parts.join(", ")
        };
        row("errors", errors);
        row(
            "processed_by",
            if self.processed_by.is_empty() {
                "-".into()
            } else {
                String::new()
            },
        );
        let width = self.processed_by.keys().map(String::len).max().unwrap_or(0);
        for (node, share) in &self.processed_by {
            let _ = writeln!(
                out,
                "  {node:<width$}  {:>6}  {:>5.1} %",
                share.tasks,
                share.share * 100.0
            );
        }
        out
    }
}

fn summary_line(summary: Option<&LatencySummary>) -> String {
    match summary {
        None => "-".to_owned(),
        Some(s) => format!(
            "min {:.1}  mean {:.1}  p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1} ms (n={})",
            s.min_ms, s.mean_ms, s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms, s.count
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RunInfo {
        RunInfo {
            targets: vec!["http://a".into()],
            spread: "round-robin".into(),
            mode: "closed".into(),
            concurrency: 2,
            rate_per_s: None,
            images: 1,
            warmup: 0,
        }
    }

    fn ok(node: &str, ms: u64, hops: u64, retried: bool) -> Outcome {
        Outcome::Completed {
            latency: Duration::from_millis(ms),
            processed_by: node.into(),
            hops,
            processing_time: Some(Duration::from_millis(ms / 2)),
            retried,
        }
    }

    fn failed(kind: &str) -> Outcome {
        Outcome::Failed {
            kind: kind.into(),
            retried: false,
        }
    }

    #[test]
    fn report_counts_everything_once() {
        let outcomes = [
            ok("a", 100, 0, false),
            ok("b", 300, 1, true),
            failed("busy"),
            ok("a", 200, 0, false),
            failed("connect"),
        ];
        let r = Report::new(info(), &outcomes, Duration::from_secs(6));
        assert_eq!((r.tasks, r.completed, r.failed), (5, 3, 2));
        assert_eq!((r.forwarded, r.retried_busy), (1, 1));
        assert_eq!(r.tasks_per_min, 30.0);
        assert_eq!(r.errors.get("busy"), Some(&1));
        assert_eq!(r.errors.get("connect"), Some(&1));
        assert_eq!(r.processed_by["a"].tasks, 2);
        let latency = r.latency.unwrap();
        assert_eq!(
            (latency.min_ms, latency.p50_ms, latency.max_ms),
            (100.0, 200.0, 300.0)
        );
        assert_eq!(r.processing_time.unwrap().max_ms, 150.0);
        let table = r.to_table();
        assert!(table.contains("busy 1, connect 1"), "{table}");
        assert!(table.contains("30.0 tasks/min"), "{table}");
        let json: serde_json::Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
        assert_eq!(json["processed_by"]["b"]["tasks"], 1);
        assert_eq!(json["latency"]["p99_ms"], 300.0);
    }

    #[test]
    fn a_run_without_successes_has_no_latency() {
        let r = Report::new(info(), &[failed("timeout")], Duration::from_secs(1));
        assert!(r.latency.is_none() && r.processed_by.is_empty());
        let json: serde_json::Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
        assert!(json["latency"].is_null());
        assert!(r.to_table().contains("timeout 1"));
    }
}
