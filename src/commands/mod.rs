//! Subcommands, one file each.

mod ca;
mod certs;
mod eval;
mod loadtest;
mod node;
mod segment;
mod synth;
mod train;
mod up;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use spheromesh::logging::LogFormat;

/// Default location of the shipped model, relative to the working directory.
pub(crate) const SHIPPED_MODEL: &str = "models/spheroid-resunet-small.safetensors";

/// Peer-to-peer worker mesh serving spheroid segmentation for SpherosegV4.
#[derive(Debug, Parser)]
#[command(version, about)]
pub(crate) struct Cli {
    /// Log lines: human (default) or json (one object per line, instance id on each).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, global = true)]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// The instance id every log line carries: the node's id for `node`, else the host name.
    pub(crate) fn instance_for_logs(&self) -> String {
        let from_node = match &self.command {
            Command::Node(args) => args.instance_id.clone().filter(|s| !s.trim().is_empty()),
            _ => None,
        };
        from_node
            .or_else(sysinfo::System::host_name)
            .unwrap_or_else(|| "unknown".to_owned())
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Segment one image and print (or write) the SpherosegV4 polygon JSON.
    Segment(segment::SegmentArgs),
    /// Train the small ResUNet from scratch on synthetic micrographs.
    Train(train::TrainArgs),
    /// Evaluate a model against the Otsu baseline on held-out data.
    Eval(eval::EvalArgs),
    /// Write one synthetic micrograph (and its mask) like those the model trains on.
    Synth(synth::SynthArgs),
    /// Run one mesh node: HTTP API, gossip membership, QUIC forwarding.
    Node(Box<node::NodeArgs>),
    /// Create the cluster CA, node certificates or a cluster key.
    Certs(certs::CertsArgs),
    /// The enrolment CA: identical replicas get certificates for their own names.
    Ca(ca::CaArgs),
    /// Start a local mesh of N nodes with the shipped model (Ctrl-C drains it).
    Up(up::UpArgs),
    /// Offer segmentation load to nodes over HTTP; report throughput, latency and shares.
    Loadtest(loadtest::LoadtestArgs),
    /// Print the HTTP API's OpenAPI 3 document (what nodes serve at /openapi.json).
    Openapi,
}

/// Model selection shared by the commands that run inference.
#[derive(Debug, clap::Args)]
pub(crate) struct ModelArgs {
    /// Weights: our safetensors or the old service's PyTorch checkpoint (.pth/.pth.tar).
    #[arg(long, env = "MODEL_PATH", default_value = SHIPPED_MODEL)]
    pub(crate) model: PathBuf,
    /// Where to run: best (CUDA if available), cpu or cuda.
    #[arg(long, env = "DEVICE_PREFERENCE", default_value = "best")]
    pub(crate) device: String,
    /// How the network's passes become a mask.
    #[command(flatten)]
    pub(crate) pipeline: PipelineArgs,
}

/// How the network's passes become a mask: augmentation, upsampling and hysteresis. Shared by
/// every command that segments (`segment`, `eval`, `node`), so each knob is declared once.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PipelineArgs {
    /// Test-time augmentation: average the eight flips/transposes of the input (8 forward
    /// passes). `auto`: on for small models (under 10 M parameters, like the shipped one),
    /// off for the original 132 M-parameter network.
    #[arg(long, env = "SEGMENT_TTA", value_enum, default_value_t = Tta::Auto)]
    pub(crate) tta: Tta,
    /// How the network's probabilities reach the image's size: `bilinear` resizes them and
    /// then thresholds, so outlines follow the edge at full resolution; `nearest` thresholds
    /// at the network's size and resizes the mask, as the old service did (stepped outlines).
    #[arg(long, env = "SEGMENT_UPSAMPLE", value_enum, default_value_t = UpsampleArg::Bilinear)]
    pub(crate) upsample: UpsampleArg,
    /// Hysteresis: a region above the threshold is kept only if the network's probability
    /// exceeds this somewhere inside it (0 keeps every region, as the old service did).
    #[arg(long, env = "SEGMENT_MIN_PEAK", default_value_t = spheromesh_inference::DEFAULT_MIN_PEAK)]
    pub(crate) min_peak: f32,
}

/// How probabilities reach the image's size (see [`spheromesh_inference::Upsample`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum UpsampleArg {
    /// Bilinear resize of the probabilities, then the threshold.
    Bilinear,
    /// Threshold, then nearest resize of the mask (the old service).
    Nearest,
}

impl From<UpsampleArg> for spheromesh_inference::Upsample {
    fn from(arg: UpsampleArg) -> Self {
        match arg {
            UpsampleArg::Bilinear => Self::Bilinear,
            UpsampleArg::Nearest => Self::Nearest,
        }
    }
}

/// Test-time augmentation setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Tta {
    /// On for models under 10 M parameters.
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

impl Tta {
    /// Whether to augment with `model`.
    pub(crate) fn enabled_for(self, model: &spheromesh_inference::Model) -> bool {
        match self {
            Tta::On => true,
            Tta::Off => false,
            Tta::Auto => model.config().parameter_count() < 10_000_000,
        }
    }
}

impl ModelArgs {
    /// Loads the model and wraps it for segmentation with the chosen augmentation.
    pub(crate) fn segmenter(
        &self,
        limits: spheromesh_inference::DecodeLimits,
    ) -> anyhow::Result<spheromesh_inference::Segmenter> {
        self.wrap(self.load()?, limits)
    }

    /// Wraps an already loaded `model` for segmentation with these arguments' augmentation,
    /// upsampling and hysteresis.
    pub(crate) fn wrap(
        &self,
        model: spheromesh_inference::Model,
        limits: spheromesh_inference::DecodeLimits,
    ) -> anyhow::Result<spheromesh_inference::Segmenter> {
        let tta = self.pipeline.tta.enabled_for(&model);
        Ok(spheromesh_inference::Segmenter::new(model, limits)
            .with_dihedral_tta(tta)
            .with_upsample(self.pipeline.upsample.into())
            .with_min_peak(self.pipeline.min_peak)?)
    }

    /// Loads the model and logs where it runs.
    pub(crate) fn load(&self) -> anyhow::Result<spheromesh_inference::Model> {
        use anyhow::Context;
        let pref: spheromesh_inference::DevicePreference = self.device.parse()?;
        let model = spheromesh_inference::Model::load(&self.model, pref)
            .with_context(|| format!("loading model {}", self.model.display()))?;
        tracing::info!(
            tta = self.pipeline.tta.enabled_for(&model),
            upsample = ?self.pipeline.upsample,
            model = %self.model.display(),
            device = %model.device_name(),
            features = ?model.config().features,
            input_size = model.config().input_size,
            "model loaded"
        );
        Ok(model)
    }
}

/// Runs the parsed command line.
pub(crate) fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Segment(args) => segment::run(args),
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Synth(args) => synth::run(args),
        Command::Node(args) => node::run(*args),
        Command::Certs(args) => certs::run(args),
        Command::Ca(args) => ca::run(args),
        Command::Up(args) => up::run(args),
        Command::Loadtest(args) => loadtest::run(args),
        Command::Openapi => {
            let document = spheromesh::http::openapi()
                .to_pretty_json()
                .map_err(|e| anyhow::anyhow!("serialising the OpenAPI document: {e}"))?;
            println!("{document}");
            Ok(())
        }
    }
}
