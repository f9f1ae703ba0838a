//! `spheromesh eval`: mean IoU and Dice of the model and of the Otsu
//! baseline, overall and on the hard subset, on held-out synthetic data (or a
//! folder of `images/` + `masks/`).

use std::path::PathBuf;

use anyhow::Context;
use spheromesh_inference::eval::{evaluate_folder, evaluate_synthetic, EvalReport};
use spheromesh_inference::{DecodeLimits, SegmentOptions};

/// First seed of the default held-out set: never used in training
/// (training uses `TRAIN_DATA_SEED..+pool_size`).
pub(crate) const HELD_OUT_SEED: u64 = 7_000_000;

/// Arguments of `spheromesh eval`.
#[derive(Debug, clap::Args)]
pub(crate) struct EvalArgs {
    #[command(flatten)]
    model: super::ModelArgs,
    /// First synthetic seed of the held-out set.
    #[arg(long, default_value_t = HELD_OUT_SEED)]
    seed: u64,
    /// Number of synthetic images.
    #[arg(long, default_value_t = 120)]
    count: usize,
    /// Evaluate on a folder with images/NAME.ext and masks/NAME.png instead.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Probability threshold.
    #[arg(long, default_value_t = 0.5)]
    threshold: f32,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: EvalArgs) -> anyhow::Result<()> {
    use spheromesh_inference::train::TRAIN_DATA_SEED;
    let segmenter = args.model.segmenter(DecodeLimits::default())?;
    let opts = SegmentOptions {
        threshold: args.threshold,
        ..SegmentOptions::default()
    };
    let (source, report) = match &args.data {
        Some(dir) => (
            format!("folder {}", dir.display()),
            evaluate_folder(&segmenter, dir, &opts)
                .with_context(|| format!("evaluating {}", dir.display()))?,
        ),
        None => {
            if (TRAIN_DATA_SEED..TRAIN_DATA_SEED + 1_000_000).contains(&args.seed) {
                tracing::warn!(
                    seed = args.seed,
                    "seed range overlaps the training pool seeds"
                );
            }
            (
                format!(
                    "synthetic seeds {}..{}",
                    args.seed,
                    args.seed + args.count as u64
                ),
                evaluate_synthetic(&segmenter, args.seed, args.count, &opts)?,
            )
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&source, &report))?
        );
    } else {
        print!("{}", table(&source, &report));
    }
    Ok(())
}

fn to_json(source: &str, r: &EvalReport) -> serde_json::Value {
    let m = |s: &spheromesh_inference::eval::MeanScores| serde_json::json!({"iou": s.iou, "dice": s.dice, "boundary_f1": s.boundary_f1, "count": s.count});
    serde_json::json!({
        "data": source,
        "model": {"overall": m(&r.model.overall), "hard": m(&r.model.hard)},
        "baseline_otsu": {"overall": m(&r.baseline.overall), "hard": m(&r.baseline.hard)},
    })
}

fn table(source: &str, r: &EvalReport) -> String {
    let row = |name: &str, s: &spheromesh_inference::eval::MethodScores| {
        format!(
            "| {name:<14} | {:>6.4} | {:>6.4} | {:>7.4} | {:>8.4} | {:>9.4} |\n",
            s.overall.iou, s.overall.dice, s.overall.boundary_f1, s.hard.iou, s.hard.dice
        )
    };
    format!(
        "data: {source} ({} images, {} hard)\n\
         | method         | IoU    | Dice   | BF1@{}px | hard IoU | hard Dice |\n\
         |----------------|--------|--------|---------|----------|-----------|\n{}{}\
         hard-subset IoU gain over Otsu: {:+.4}\n",
        r.model.overall.count,
        r.model.hard.count,
        spheromesh_inference::eval::BOUNDARY_TOLERANCE_PX,
        row("ResUNet", &r.model),
        row("Otsu baseline", &r.baseline),
        r.model.hard.iou - r.baseline.hard.iou
    )
}
