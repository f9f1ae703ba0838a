//! `spheromesh loadtest`: offer segmentation load to nodes over HTTP and print
//! throughput, latency percentiles, errors by kind and each node's share.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use spheromesh::loadtest::{self, ConfigError, Load, LoadtestConfig, LoadtestError, Process};

/// Arguments of `spheromesh loadtest`.
#[derive(Debug, clap::Args)]
pub(crate) struct LoadtestArgs {
    /// Node base URLs (http://host:port), comma-separated or repeated.
    #[arg(long, env = "ML_SERVICE_URL", value_delimiter = ',', num_args = 1.., default_value = "http://127.0.0.1:5002")]
    targets: Vec<String>,
    /// Send task i to target i mod n (round-robin), or every task to the first target.
    #[arg(long, default_value = "round-robin", value_parser = ["round-robin", "first"])]
    spread: String,
    /// Tasks in the measured phase.
    #[arg(long, env = "NUM_TEST_TASKS", default_value_t = 100)]
    tasks: usize,
    /// Closed loop: concurrent workers. With --rate: most requests in flight.
    #[arg(long, env = "CONCURRENT_REQUESTS", default_value_t = 4)]
    concurrency: usize,
    /// Send the PNG/JPEG/TIFF/BMP files of this folder, in name order, in turn.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["generate", "image_size"])]
    images: Option<PathBuf>,
    /// Without --images: generate this many distinct synthetic micrographs (PNG).
    #[arg(long, value_name = "N", default_value_t = 4)]
    generate: usize,
    /// Size of the generated images, WIDTHxHEIGHT (default: each seed picks 512..=1300 per side).
    #[arg(long, value_name = "WxH", value_parser = parse_size)]
    image_size: Option<(u32, u32)>,
    /// Seed of the generated images (seed, seed+1, ...) and of Poisson arrivals.
    #[arg(long, default_value_t = 9_100_000)]
    seed: u64,
    /// Open loop: offer this many arrivals per second instead of closed-loop workers.
    #[arg(long, value_name = "R")]
    rate: Option<f64>,
    /// With --rate: Poisson arrivals (seeded) or a fixed interval.
    #[arg(long, default_value = "poisson", value_parser = ["poisson", "fixed"], requires = "rate")]
    arrivals: String,
    /// Per-request timeout in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    timeout: f64,
    /// Segmentation threshold sent as ?threshold= (the node's default when absent).
    #[arg(long)]
    threshold: Option<f32>,
    /// Tasks sent before the measured phase and left out of the report.
    #[arg(long, value_name = "N", default_value_t = 0)]
    warmup: usize,
    /// On a 503 `busy`, wait for Retry-After and send once more (off: a load test shows them).
    #[arg(long)]
    retry_busy: bool,
    /// When a connection fails or breaks before any answer (its node died), send the task
    /// again on a new connection, up to 3 times 250 ms apart (off: a load test shows them).
    #[arg(long)]
    retry_transport: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{s:?} is not WIDTHxHEIGHT, e.g. 512x512");
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    Ok((
        w.trim().parse().map_err(|_| bad())?,
        h.trim().parse().map_err(|_| bad())?,
    ))
}

impl LoadtestArgs {
    fn config(&self) -> Result<LoadtestConfig, ConfigError> {
        let load = match self.rate {
            None => Load::Closed,
            Some(rate) => Load::Open {
                rate,
                process: if self.arrivals == "fixed" {
                    Process::Fixed
                } else {
                    Process::Poisson { seed: self.seed }
                },
            },
        };
        let timeout = Duration::try_from_secs_f64(self.timeout)
            .ok()
            .filter(|t| !t.is_zero())
            .ok_or(ConfigError::Timeout)?;
        let config = LoadtestConfig {
            targets: self.targets.clone(),
            spread: self.spread.parse()?,
            tasks: self.tasks,
            concurrency: self.concurrency,
            load,
            timeout,
            threshold: self.threshold,
            warmup: self.warmup,
            retry_busy: self.retry_busy,
            retry_transport: self.retry_transport,
            progress: true,
        };
        config.validate()?;
        Ok(config)
    }
}

pub(crate) fn run(args: LoadtestArgs) -> anyhow::Result<()> {
    let config = match args.config() {
        Ok(config) => config,
        Err(err) => usage_error(&err),
    };
    let images = match &args.images {
        Some(dir) => loadtest::load_images(dir)?,
        None => {
            if args.generate == 0 {
                usage_error(&"--generate must be at least 1");
            }
            loadtest::generate_images(args.generate, args.seed, args.image_size)?
        }
    };
    tracing::info!(
        targets = ?config.targets,
        spread = config.spread.name(),
        tasks = config.tasks,
        concurrency = config.concurrency,
        images = images.len(),
        image_bytes = images.iter().map(|i| i.bytes.len()).sum::<usize>(),
        "loadtest starting"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = match runtime.block_on(loadtest::run(&config, images)) {
        Ok(report) => report,
        Err(LoadtestError::Config(err)) => usage_error(&err),
        Err(err) => return Err(err.into()),
    };
    if args.json {
        println!("{}", report.to_json()?);
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}

/// Bad configuration: one line and EX_USAGE (64), as the other entry points will.
fn usage_error(err: &dyn std::fmt::Display) -> ! {
    eprintln!("error: {err}");
    std::process::exit(64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("640x480"), Ok((640, 480)));
        assert_eq!(parse_size("64X64"), Ok((64, 64)));
        assert!(parse_size("640").is_err());
        assert!(parse_size("ax1").is_err());
    }
}
