//! `spheromesh loadtest`: offer segmentation load to one or more nodes over the
//! HTTP API and report throughput, latency percentiles, errors by kind and how
//! the work spread over the mesh (`processed_by`).
//!
//! It does properly what the seed's `test-ml-scaling.py` did: closed-loop
//! workers by default, or open-loop arrivals at a fixed rate or as a seeded
//! Poisson process (see `arrivals`); exact nearest-rank percentiles from every
//! sample (see `stats`); 503s are counted, not hidden by retries, unless asked.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use spheromesh::loadtest::{self, LoadtestConfig};
//! let config = LoadtestConfig {
//!     targets: vec!["http://127.0.0.1:5002".into()],
//!     tasks: 20,
//!     ..LoadtestConfig::default()
//! };
//! let images = loadtest::generate_images(4, 9_100_000, Some((512, 512)))?;
//! let report = loadtest::run(&config, images).await?;
//! println!("{}", report.to_table());
//! # Ok(())
//! # }
//! ```

mod arrivals;
mod client;
mod images;
mod report;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Url;

pub use arrivals::Process;
pub use images::{generate as generate_images, load_dir as load_images, ImageError, TestImage};
pub use report::Report;
pub use stats::{LatencySummary, Share};

use client::Sender;
use report::RunInfo;

/// How tasks are spread over the targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Spread {
    /// Task `i` goes to target `i mod n`.
    #[default]
    RoundRobin,
    /// Every task goes to the first target; the mesh spreads them.
    First,
}

impl Spread {
    /// The command-line name: `round-robin` or `first`.
    pub fn name(self) -> &'static str {
        match self {
            Spread::RoundRobin => "round-robin",
            Spread::First => "first",
        }
    }
}

impl std::str::FromStr for Spread {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "round-robin" => Ok(Spread::RoundRobin),
            "first" => Ok(Spread::First),
            other => Err(ConfigError::Spread {
                value: other.to_owned(),
            }),
        }
    }
}

/// How load is offered.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Load {
    /// `concurrency` workers, each sending its next task when the last answered.
    #[default]
    Closed,
    /// Arrivals on a schedule, `rate` per second, at most `concurrency` in flight.
    Open {
        /// Arrivals per second.
        rate: f64,
        /// How the arrivals are spaced.
        process: Process,
    },
}

/// Everything a load test needs besides the images. Defaults: one target on
/// localhost:5002, 100 tasks, 4 closed-loop workers, 120 s timeout.
#[derive(Debug, Clone)]
pub struct LoadtestConfig {
    /// Node base URLs (`http://host:port`, no `/segment`; no `https://`, see
    /// [`ConfigError::Target`]).
    pub targets: Vec<String>,
    /// How tasks go to the targets.
    pub spread: Spread,
    /// Tasks of the measured phase.
    pub tasks: usize,
    /// Closed loop: workers; open loop: most requests in flight.
    pub concurrency: usize,
    /// Closed or open loop.
    pub load: Load,
    /// Per-request timeout, connect to last byte (a `--retry-busy` wait included).
    pub timeout: Duration,
    /// Sent as `?threshold=` when set; strictly between 0 and 1.
    pub threshold: Option<f32>,
    /// Tasks sent (closed loop, same workers) before the measured phase and left
    /// out of the report, to warm connections and models.
    pub warmup: usize,
    /// Honour one `Retry-After` of a 503 `busy` per task instead of counting it.
    pub retry_busy: bool,
    /// Send a task again, on a new connection and up to 3 times 250 ms apart, when its
    /// connection failed or broke before any answer (the node it reached died or was gone);
    /// such tasks are counted apart as `retried_transport`.
    pub retry_transport: bool,
    /// Draw a progress bar on stderr (hidden anyway when stderr is no terminal).
    pub progress: bool,
}

impl Default for LoadtestConfig {
    fn default() -> Self {
        Self {
            targets: vec!["http://127.0.0.1:5002".to_owned()],
            spread: Spread::RoundRobin,
            tasks: 100,
            concurrency: 4,
            load: Load::Closed,
            timeout: Duration::from_secs(120),
            threshold: None,
            warmup: 0,
            retry_busy: false,
            retry_transport: false,
            progress: true,
        }
    }
}

/// A broken rule of [`LoadtestConfig`], naming the value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No target given.
    #[error("at least one target is needed")]
    NoTargets,
    /// A target is not an `http://host[:port]` base URL. `https://` is refused too:
    /// this build's HTTP client has no TLS (the node API is plain HTTP; the mesh's
    /// own traffic is mutual TLS over QUIC).
    #[error("target {target:?} is not an http://host[:port] base URL")]
    Target {
        /// The target as given.
        target: String,
    },
    /// `--spread` is neither `round-robin` nor `first`.
    #[error("spread {value:?} is not round-robin or first")]
    Spread {
        /// The value as given.
        value: String,
    },
    /// `tasks` is 0.
    #[error("tasks must be at least 1")]
    NoTasks,
    /// `concurrency` is 0.
    #[error("concurrency must be at least 1")]
    NoConcurrency,
    /// The open-loop rate is not a positive finite number.
    #[error("rate {rate} must be a positive number of arrivals per second")]
    Rate {
        /// The rate as given.
        rate: f64,
    },
    /// The timeout is zero.
    #[error("timeout must be longer than 0 s")]
    Timeout,
    /// The threshold is outside (0, 1).
    #[error("threshold {threshold} must be strictly between 0 and 1")]
    Threshold {
        /// The threshold as given.
        threshold: f32,
    },
    /// No image to send.
    #[error("no image to send")]
    NoImages,
}

impl LoadtestConfig {
    /// Checks every rule and builds the `/segment` URL of each target.
    ///
    /// # Errors
    ///
    /// The first broken rule, as a [`ConfigError`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.segment_urls().map(drop)
    }

    fn segment_urls(&self) -> Result<Vec<Url>, ConfigError> {
        if self.tasks == 0 {
            return Err(ConfigError::NoTasks);
        }
        if self.concurrency == 0 {
            return Err(ConfigError::NoConcurrency);
        }
        if let Load::Open { rate, .. } = self.load {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(ConfigError::Rate { rate });
            }
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::Timeout);
        }
        if let Some(threshold) = self.threshold {
            if !(threshold > 0.0 && threshold < 1.0) {
                return Err(ConfigError::Threshold { threshold });
            }
        }
        if self.targets.is_empty() {
            return Err(ConfigError::NoTargets);
        }
        self.targets
            .iter()
            .map(|target| {
                let bad = || ConfigError::Target {
                    target: target.clone(),
                };
                let base = Url::parse(target).map_err(|_| bad())?;
                if base.scheme() != "http" || base.host().is_none() {
                    return Err(bad());
                }
                let mut url = Url::parse(&format!("{}/segment", target.trim_end_matches('/')))
                    .map_err(|_| bad())?;
                if let Some(threshold) = self.threshold {
                    url.query_pairs_mut()
                        .append_pair("threshold", &threshold.to_string());
                }
                Ok(url)
            })
            .collect()
    }

    fn mode(&self) -> (&'static str, Option<f64>) {
        match self.load {
            Load::Closed => ("closed", None),
            Load::Open {
                rate,
                process: Process::Fixed,
            } => ("fixed", Some(rate)),
            Load::Open {
                rate,
                process: Process::Poisson { .. },
            } => ("poisson", Some(rate)),
        }
    }
}

/// Why a load test could not run. Failed requests are not errors here: they are
/// counted in the [`Report`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadtestError {
    /// The configuration breaks a rule.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP client could not be built.
    #[error("building the HTTP client")]
    Client(#[source] reqwest::Error),
}

/// Runs the warmup, then the measured phase, and reports on the latter.
///
/// # Errors
///
/// [`LoadtestError::Config`] for a broken rule (checked before anything is sent),
/// [`LoadtestError::Client`] if the HTTP client can't be built.
pub async fn run(config: &LoadtestConfig, images: Vec<TestImage>) -> Result<Report, LoadtestError> {
    let urls = config.segment_urls()?;
    if images.is_empty() {
        return Err(ConfigError::NoImages.into());
    }
    let http = reqwest::Client::builder()
        .timeout(config.timeout)
        .build()
        .map_err(LoadtestError::Client)?;
    let fresh = reqwest::Client::builder()
        .timeout(config.timeout)
        .pool_max_idle_per_host(0)
        .build()
        .map_err(LoadtestError::Client)?;
    let info = RunInfo {
        targets: config.targets.clone(),
        spread: config.spread.name().to_owned(),
        mode: config.mode().0.to_owned(),
        concurrency: config.concurrency,
        rate_per_s: config.mode().1,
        images: images.len(),
        warmup: config.warmup,
    };
    let sender = Arc::new(Sender {
        http,
        fresh,
        urls,
        spread: config.spread,
        images,
        retry_busy: config.retry_busy,
        retry_transport: config.retry_transport,
        transport_retries: std::sync::atomic::AtomicU64::new(0),
        max_retry_wait: config.timeout,
    });
    if config.warmup > 0 {
        let bar = progress_bar(config.progress, config.warmup, "warmup");
        client::closed_loop(
            sender.clone(),
            config.warmup,
            config.concurrency,
            bar.clone(),
        )
        .await;
        bar.finish_and_clear();
    }
    let bar = progress_bar(config.progress, config.tasks, "tasks");
    let (outcomes, wall) = match config.load {
        Load::Closed => {
            client::closed_loop(
                Arc::clone(&sender),
                config.tasks,
                config.concurrency,
                bar.clone(),
            )
            .await
        }
        Load::Open { rate, process } => {
            let schedule = arrivals::offsets(process, rate, config.tasks);
            client::open_loop(
                Arc::clone(&sender),
                &schedule,
                config.concurrency,
                bar.clone(),
            )
            .await
        }
    };
    bar.finish_and_clear();
    let mut report = Report::new(info, &outcomes, wall);
    report.retried_transport = sender.transport_retries();
    Ok(report)
}

fn progress_bar(show: bool, len: usize, prefix: &'static str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    // The template is a constant: it parses, and if a future indicatif disagreed,
    // the default style is a fine fallback.
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix:>7} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta}) {msg}",
    ) {
        bar.set_style(style);
    }
    bar.set_prefix(prefix);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LoadtestConfig {
        LoadtestConfig {
            targets: vec!["http://127.0.0.1:1/".into(), "http://node-b:5002".into()],
            threshold: Some(0.25),
            ..LoadtestConfig::default()
        }
    }

    #[test]
    fn urls_get_the_path_and_threshold() {
        let urls = config().segment_urls().unwrap();
        assert_eq!(
            urls[0].as_str(),
            "http://127.0.0.1:1/segment?threshold=0.25"
        );
        assert_eq!(
            urls[1].as_str(),
            "http://node-b:5002/segment?threshold=0.25"
        );
    }

    #[test]
    fn each_rule_is_named() {
        let check = |edit: fn(&mut LoadtestConfig)| {
            let mut c = config();
            edit(&mut c);
            c.validate().unwrap_err()
        };
        assert_eq!(check(|c| c.targets.clear()), ConfigError::NoTargets);
        assert!(matches!(
            check(|c| c.targets.push("ftp://x".into())),
            ConfigError::Target { .. }
        ));
        assert!(matches!(
            check(|c| c.targets.push("https://x".into())),
            ConfigError::Target { .. }
        ));
        assert!(matches!(
            check(|c| c.targets.push("node:5002".into())),
            ConfigError::Target { .. }
        ));
        assert_eq!(check(|c| c.tasks = 0), ConfigError::NoTasks);
        assert_eq!(check(|c| c.concurrency = 0), ConfigError::NoConcurrency);
        assert_eq!(check(|c| c.timeout = Duration::ZERO), ConfigError::Timeout);
        assert_eq!(
            check(|c| c.threshold = Some(1.0)),
            ConfigError::Threshold { threshold: 1.0 }
        );
        fn open(rate: f64) -> Load {
            Load::Open {
                rate,
                process: Process::Fixed,
            }
        }
        assert!(matches!(
            check(|c| c.load = open(0.0)),
            ConfigError::Rate { .. }
        ));
        assert!(matches!(
            check(|c| c.load = open(f64::INFINITY)),
            ConfigError::Rate { .. }
        ));
        assert!(config().validate().is_ok());
    }

    #[test]
    fn spread_parses_its_names() {
        assert_eq!("first".parse::<Spread>(), Ok(Spread::First));
        assert_eq!("round-robin".parse::<Spread>(), Ok(Spread::RoundRobin));
        assert!(matches!(
            "random".parse::<Spread>(),
            Err(ConfigError::Spread { .. })
        ));
    }
}
