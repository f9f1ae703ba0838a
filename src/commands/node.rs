//! `spheromesh node`: one long-running mesh node.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use std::sync::Arc;

use spheromesh::broker::{run_consumer, BrokerArgs, BrokerConfig, BrokerStatus};
use spheromesh::enrolment::EnrolSettings;
use spheromesh::http::ApiToken;
use spheromesh::node::{Engine, ExecutorLimits, SyntheticSpec, SYNTHETIC_PREFIX};
use spheromesh::runtime::{self, NodeConfig, Sidecar};
use spheromesh::scaling::ScalingSettings;
use spheromesh_inference::DecodeLimits;
use spheromesh_mesh::security::{key_from_secret, JoinToken};

/// Arguments of `spheromesh node`; every flag has an environment fallback.
#[derive(Debug, clap::Args)]
pub(crate) struct NodeArgs {
    /// HTTP API listen address.
    #[arg(long, env = "HTTP_LISTEN", default_value = "0.0.0.0:5002")]
    pub(crate) http_listen: SocketAddr,
    /// QUIC (forwarded tasks) listen address, UDP.
    #[arg(long, env = "QUIC_LISTEN", default_value = "0.0.0.0:5003")]
    pub(crate) quic_listen: SocketAddr,
    /// Gossip listen address, UDP.
    #[arg(long, env = "GOSSIP_LISTEN", default_value = "0.0.0.0:7946")]
    pub(crate) gossip_listen: SocketAddr,
    /// IP peers reach this node at (default: the listen IP, or 127.0.0.1 for 0.0.0.0).
    #[arg(long, env = "ADVERTISE_HOST")]
    pub(crate) advertise_host: Option<IpAddr>,
    /// Gossip addresses of seed nodes, `host:port`, comma-separated; DNS names are
    /// re-resolved every round.
    #[arg(long, env = "SEEDS", value_delimiter = ',')]
    pub(crate) seeds: Vec<String>,
    /// Instance id (default: `HOSTNAME`, else the host name).
    #[arg(long, env = "HOSTNAME")]
    pub(crate) instance_id: Option<String>,
    /// Cluster name; nodes of another cluster are refused.
    #[arg(long, env = "CLUSTER_ID", default_value = "spheromesh")]
    pub(crate) cluster_id: String,
    /// Tasks run in parallel on this node.
    #[arg(long, env = "MAX_CONCURRENT_TASKS", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_concurrent_tasks: u32,
    /// Tasks that may wait for a slot here before this node answers busy.
    #[arg(long, env = "QUEUE_LIMIT", default_value_t = 32)]
    pub(crate) queue_limit: u32,
    /// Model runs at once (default: the number of cores on the CPU, 1 on a GPU).
    #[arg(long, env = "INFERENCE_THREADS", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) inference_threads: Option<u32>,
    /// Weights (safetensors or PyTorch checkpoint), or `synthetic:MS` for the test double
    /// that only takes MS milliseconds per task.
    #[arg(long, env = "MODEL_PATH", default_value = super::SHIPPED_MODEL)]
    pub(crate) model: String,
    /// Where to run: best, cpu or cuda.
    #[arg(long, env = "DEVICE_PREFERENCE", default_value = "best")]
    pub(crate) device: String,
    /// How the network's passes become a mask (TTA, upsampling, hysteresis).
    #[command(flatten)]
    pub(crate) pipeline: super::PipelineArgs,
    /// Folder with `ca.pem`, `<instance-id>.pem` and `<instance-id>.key` (see `spheromesh certs`).
    #[arg(long, env = "SPHEROMESH_TLS_DIR", conflicts_with = "enroll_url")]
    pub(crate) tls_dir: Option<PathBuf>,
    /// Enrolment CA (`spheromesh ca serve`), e.g. http://ca:7900: instead of a TLS folder,
    /// make a key and get a certificate for this instance id at start (needs a join token).
    #[arg(long, env = "ENROLL_URL")]
    pub(crate) enroll_url: Option<String>,
    /// Join token for the enrolment CA.
    #[arg(
        long,
        env = "JOIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "join_token_file"
    )]
    pub(crate) join_token: Option<String>,
    /// File holding the join token (a Docker or Kubernetes secret).
    #[arg(long, env = "JOIN_TOKEN_FILE")]
    pub(crate) join_token_file: Option<PathBuf>,
    /// Seconds to keep asking an unreachable enrolment CA before giving up.
    #[arg(long, env = "ENROLL_TIMEOUT_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) enroll_timeout_secs: u64,
    /// Cluster key sealing gossip: 64 hex digits or a passphrase of 16+ characters.
    #[arg(long, env = "SPHEROMESH_CLUSTER_KEY", hide_env_values = true)]
    pub(crate) cluster_key: Option<String>,
    /// Seconds in-flight work gets to finish on SIGTERM.
    #[arg(long, env = "DRAIN_GRACE_SECS", default_value_t = 30)]
    pub(crate) drain_grace_secs: u64,
    /// Seconds the HTTP listener stays open after SIGTERM at least (new requests are sent to
    /// peers), so that clients that found this node by DNS or an endpoint list before it left
    /// still get answers; it also stays open while local work runs. Must be below
    /// DRAIN_GRACE_SECS.
    #[arg(long, env = "DRAIN_LISTEN_SECS", default_value_t = 2)]
    pub(crate) drain_listen_secs: u64,
    /// Gossip round period in milliseconds.
    #[arg(long, env = "GOSSIP_INTERVAL_MS", default_value_t = 200)]
    pub(crate) gossip_interval_ms: u64,
    /// Milliseconds of silence after which a peer is dead.
    #[arg(long, env = "DEAD_AFTER_MS", default_value_t = 2000)]
    pub(crate) dead_after_ms: u64,
    /// Longest time an HTTP request may take, in seconds.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) request_timeout_secs: u64,
    /// Megabytes of HTTP request bodies held at once; requests beyond it get 503 at once.
    #[arg(long, env = "HTTP_BODY_BUDGET_MB", default_value_t = 512)]
    pub(crate) http_body_budget_mb: usize,
    /// Largest accepted image, in bytes.
    #[arg(long, default_value_t = DecodeLimits::DEFAULT_MAX_BYTES)]
    pub(crate) max_bytes: usize,
    /// Largest accepted image, in pixels.
    #[arg(long, default_value_t = DecodeLimits::DEFAULT_MAX_PIXELS)]
    pub(crate) max_pixels: u64,
    /// Bearer token every HTTP route but /health, /health/live and /health/ready requires
    /// (16+ visible ASCII characters); unset: the API is open, as the old service was.
    #[arg(
        long,
        env = "API_TOKEN",
        hide_env_values = true,
        conflicts_with = "api_token_file"
    )]
    pub(crate) api_token: Option<String>,
    /// File holding the API token (e.g. a Docker or Kubernetes secret).
    #[arg(long, env = "API_TOKEN_FILE")]
    pub(crate) api_token_file: Option<PathBuf>,
    /// Autoscaling signal: RabbitMQ messages waiting per replica the mesh should hold at most.
    #[arg(long, env = "SCALE_TARGET_QUEUE_PER_REPLICA", default_value_t = 10.0)]
    pub(crate) scale_target_queue_per_replica: f64,
    /// Autoscaling signal: tasks running or queued per slot the mesh should run at.
    #[arg(long, env = "SCALE_TARGET_SLOT_UTILISATION", default_value_t = 0.7)]
    pub(crate) scale_target_slot_utilisation: f64,
    /// Autoscaling signal: a ratio to target within this of 1 changes nothing.
    #[arg(long, env = "SCALE_TOLERANCE", default_value_t = 0.1)]
    pub(crate) scale_tolerance: f64,
    /// Autoscaling signal: seconds a lower recommendation must hold before it shows.
    #[arg(long, env = "SCALE_DOWN_WINDOW_SECS", default_value_t = 300)]
    pub(crate) scale_down_window_secs: u64,
    /// Autoscaling signal: never recommend fewer nodes.
    #[arg(long, env = "SCALE_MIN_REPLICAS", default_value_t = 1)]
    pub(crate) scale_min_replicas: u32,
    /// Autoscaling signal: never recommend more nodes.
    #[arg(long, env = "SCALE_MAX_REPLICAS", default_value_t = 100)]
    pub(crate) scale_max_replicas: u32,
    /// RabbitMQ consumer (on when a broker URL or host is given) and uploads root.
    #[command(flatten)]
    pub(crate) broker: BrokerArgs,
}

pub(crate) fn run(args: NodeArgs) -> anyhow::Result<()> {
    let instance_id = match args.instance_id.clone().filter(|s| !s.trim().is_empty()) {
        Some(id) => id,
        None => sysinfo::System::host_name().context("no --instance-id, HOSTNAME or host name")?,
    };
    let limits = DecodeLimits {
        max_bytes: args.max_bytes,
        max_pixels: args.max_pixels,
    };
    let scaling = ScalingSettings {
        queue_per_replica: args.scale_target_queue_per_replica,
        slot_utilisation: args.scale_target_slot_utilisation,
        tolerance: args.scale_tolerance,
        scale_down_window: Duration::from_secs(args.scale_down_window_secs),
        min_replicas: args.scale_min_replicas,
        max_replicas: args.scale_max_replicas,
    };
    scaling.validate().context("autoscaling settings")?;
    let api_token = match (&args.api_token, &args.api_token_file) {
        (Some(token), _) => Some(ApiToken::new(token).context("API_TOKEN")?),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading API_TOKEN_FILE {}", path.display()))?;
            Some(ApiToken::new(&text).context("API_TOKEN_FILE")?)
        }
        (None, None) => None,
    };
    if args.drain_listen_secs >= args.drain_grace_secs.max(1) {
        anyhow::bail!(
            "DRAIN_LISTEN_SECS ({}) must be below DRAIN_GRACE_SECS ({})",
            args.drain_listen_secs,
            args.drain_grace_secs
        );
    }
    let enrolment = enrolment_settings(&args)?;
    let engine = load_engine(&args, limits)?;
    // Before joining the mesh, so no task waits for one-time kernel work.
    let measured_service = engine.warm_up().context("warming the model up")?;
    if let Some(took) = measured_service {
        tracing::info!(ms = took.as_millis() as u64, "model warmed up");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let cluster_key = args
        .cluster_key
        .as_deref()
        .map(key_from_secret)
        .transpose()
        .context("--cluster-key")?;
    let config = NodeConfig {
        instance_id,
        cluster_id: args.cluster_id,
        http_listen: args.http_listen,
        quic_listen: args.quic_listen,
        gossip_listen: args.gossip_listen,
        advertise_host: args.advertise_host,
        seeds: args
            .seeds
            .into_iter()
            .filter(|s| !s.trim().is_empty())
            .collect(),
        model_path: args.model,
        limits: ExecutorLimits {
            capacity: args.max_concurrent_tasks,
            queue_limit: args.queue_limit,
            inference_threads: args
                .inference_threads
                .unwrap_or_else(|| engine.default_compute_permits(cores)),
        },
        tls_dir: args.tls_dir,
        enrolment,
        drain_listen: Duration::from_secs(args.drain_listen_secs),
        cluster_key,
        drain_grace: Duration::from_secs(args.drain_grace_secs),
        gossip_interval: Duration::from_millis(args.gossip_interval_ms),
        dead_after: Duration::from_millis(args.dead_after_ms),
        request_timeout: Duration::from_secs(args.request_timeout_secs),
        uploads_root: Some(args.broker.uploads_root.clone()),
        http_body_budget: args
            .http_body_budget_mb
            .saturating_mul(1024 * 1024)
            .max(args.max_bytes + 64 * 1024),
        measured_service,
        scaling,
        api_token,
    };
    let broker_config = BrokerConfig::from_args(&args.broker).context("RabbitMQ settings")?;
    let broker_status = broker_config.as_ref().map(|_| BrokerStatus::new());
    let sidecar = broker_config
        .zip(broker_status.clone())
        .map(|(config, status)| {
            let start: Sidecar = Box::new(move |dispatcher, stop| {
                tokio::spawn(async move {
                    if let Err(error) = run_consumer(config, dispatcher, status, stop).await {
                        tracing::error!(%error, "RabbitMQ consumer stopped");
                    }
                })
            });
            start
        });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(runtime::run(
        config,
        engine,
        broker_status.map(|s| s as Arc<BrokerStatus>),
        sidecar,
        runtime::shutdown_signal(),
    ))
}

/// `ENROLL_URL` with its token, or nothing; a token without a URL (or the reverse) is a
/// mistake worth stopping for.
fn enrolment_settings(args: &NodeArgs) -> anyhow::Result<Option<EnrolSettings>> {
    let token = match (&args.join_token, &args.join_token_file) {
        (Some(token), _) => Some(JoinToken::new(token).context("JOIN_TOKEN")?),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading JOIN_TOKEN_FILE {}", path.display()))?;
            Some(JoinToken::new(&text).context("JOIN_TOKEN_FILE")?)
        }
        (None, None) => None,
    };
    match (&args.enroll_url, token) {
        (Some(url), Some(token)) => Ok(Some(EnrolSettings {
            url: url.clone(),
            token,
            give_up_after: Duration::from_secs(args.enroll_timeout_secs),
        })),
        (Some(_), None) => anyhow::bail!("ENROLL_URL needs JOIN_TOKEN or JOIN_TOKEN_FILE"),
        (None, Some(_)) => anyhow::bail!("JOIN_TOKEN is set but ENROLL_URL is not"),
        (None, None) => Ok(None),
    }
}

fn load_engine(args: &NodeArgs, limits: DecodeLimits) -> anyhow::Result<Engine> {
    if args.model.starts_with(SYNTHETIC_PREFIX) {
        let SyntheticSpec(service) = args.model.parse().map_err(|e: String| anyhow::anyhow!(e))?;
        tracing::warn!(
            ?service,
            "synthetic model: a TEST DOUBLE that only takes time and returns no polygons"
        );
        return Ok(Engine::Synthetic { service, limits });
    }
    let segmenter = super::ModelArgs {
        model: PathBuf::from(&args.model),
        device: args.device.clone(),
        pipeline: args.pipeline.clone(),
    }
    .segmenter(limits)?;
    Ok(Engine::Model(segmenter))
}
