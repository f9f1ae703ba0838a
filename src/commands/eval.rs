//! `spheromesh eval`: mean IoU, Dice and boundary F1 of the model and of the
//! Otsu baseline, overall and on the hard, cell-cloud, bubble and fibre
//! subsets, on a held-out synthetic set (or a folder of `images/` + `masks/`),
//! and how often each finds a polygon in scenes without any spheroid.

use std::path::PathBuf;

use anyhow::Context;
use spheromesh_inference::eval::{
    evaluate_empty, evaluate_folder, evaluate_synthetic, EmptyReport, EvalReport, MeanScores,
    MethodScores, SynthSet,
};
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
    /// Synthetic set: v2 (the training generator), shift (the independent renderer, never trained on) or v1.
    #[arg(long, default_value = "v2")]
    set: SynthSet,
    /// Scenes without any spheroid to run as well (same set and seeds; 0 skips them).
    #[arg(long, default_value_t = 100)]
    empty_count: usize,
    /// Evaluate on a folder with images/NAME.ext and masks/NAME.png instead.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Probability threshold.
    #[arg(long, default_value_t = 0.5)]
    threshold: f32,
    /// Write side-by-side pictures (image | truth | prediction) of the worst images of a synthetic set here.
    #[arg(long)]
    overlays: Option<PathBuf>,
    /// How many of the worst images `--overlays` writes.
    #[arg(long, default_value_t = 3)]
    overlay_count: usize,
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
    let (source, report, empty) = match &args.data {
        Some(dir) => (
            format!("folder {}", dir.display()),
            evaluate_folder(&segmenter, dir, &opts)
                .with_context(|| format!("evaluating {}", dir.display()))?,
            None,
        ),
        None => {
            if (TRAIN_DATA_SEED..TRAIN_DATA_SEED + 1_000_000).contains(&args.seed) {
                tracing::warn!(
                    seed = args.seed,
                    "seed range overlaps the training pool seeds"
                );
            }
            let empty = (args.empty_count > 0 && args.set != SynthSet::V1)
                .then(|| evaluate_empty(&segmenter, args.set, args.seed, args.empty_count, &opts))
                .transpose()?;
            (
                format!(
                    "synthetic set {:?}, seeds {}..{}",
                    args.set,
                    args.seed,
                    args.seed + args.count as u64
                ),
                evaluate_synthetic(&segmenter, args.set, args.seed, args.count, &opts)?,
                empty,
            )
        }
    };
    if let (Some(dir), None) = (&args.overlays, &args.data) {
        write_overlays(
            &segmenter,
            &opts,
            args.set,
            &report,
            dir,
            args.overlay_count,
        )?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&source, &report, empty.as_ref()))?
        );
    } else {
        print!("{}", table(&source, &report, empty.as_ref()));
    }
    Ok(())
}

/// Writes `DIR/<set>-<seed>.jpg` for the `count` images with the lowest model IoU.
fn write_overlays(
    segmenter: &spheromesh_inference::Segmenter,
    opts: &SegmentOptions,
    set: SynthSet,
    report: &EvalReport,
    dir: &std::path::Path,
    count: usize,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut worst: Vec<_> = report.images.iter().collect();
    worst.sort_by(|a, b| a.model_iou.total_cmp(&b.model_iou));
    for image in worst.into_iter().take(count) {
        let seed: u64 = image.item.parse().context("synthetic items are seeds")?;
        let sample = set.sample(seed);
        let picture = spheromesh_inference::eval::comparison(
            segmenter,
            &sample.image,
            &sample.mask,
            opts,
            360,
        )?;
        let name = format!("{}-{seed}.jpg", format!("{set:?}").to_lowercase());
        let path = dir.join(&name);
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        );
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut file, 85)
            .encode_image(&picture)
            .with_context(|| format!("writing {}", path.display()))?;
        println!(
            "overlay {name}: model IoU {:.4}, Otsu {:.4}, tags {:?}",
            image.model_iou, image.baseline_iou, image.tags
        );
    }
    Ok(())
}

fn to_json(source: &str, r: &EvalReport, empty: Option<&EmptyReport>) -> serde_json::Value {
    let m = |s: &MeanScores| serde_json::json!({"iou": s.iou, "dice": s.dice, "boundary_f1": s.boundary_f1, "count": s.count});
    let method = |s: &MethodScores| serde_json::json!({"overall": m(&s.overall), "hard": m(&s.hard), "cloud": m(&s.cloud), "bubble": m(&s.bubble), "fibre": m(&s.fibre)});
    serde_json::json!({
        "data": source,
        "model": method(&r.model),
        "baseline_otsu": method(&r.baseline),
        "no_spheroid": empty.map(|e| serde_json::json!({
            "images": e.images,
            "model_with_polygons": e.model_with_polygons,
            "baseline_with_polygons": e.baseline_with_polygons,
        })),
    })
}

fn table(source: &str, r: &EvalReport, empty: Option<&EmptyReport>) -> String {
    let row = |name: &str, s: &MethodScores| {
        format!(
            "| {name:<14} | {:>6.4} | {:>6.4} | {:>7.4} | {:>8.4} | {:>9.4} | {:>6.4} | {:>6.4} |\n",
            s.overall.iou, s.overall.dice, s.overall.boundary_f1, s.hard.iou, s.cloud.iou, s.bubble.iou, s.fibre.iou
        )
    };
    let gain = |pick: fn(&MethodScores) -> &MeanScores| pick(&r.model).iou - pick(&r.baseline).iou;
    let mut out = format!(
        "data: {source} ({} images: {} hard, {} cloud, {} bubble, {} fibre)\n\
         | method         | IoU    | Dice   | BF1@{}px | hard IoU | cloud IoU | bubble | fibre  |\n\
         |----------------|--------|--------|---------|----------|-----------|--------|--------|\n{}{}\
         IoU gain over Otsu: hard {:+.4}, cloud {:+.4}, bubble {:+.4}, fibre {:+.4}\n",
        r.model.overall.count,
        r.model.hard.count,
        r.model.cloud.count,
        r.model.bubble.count,
        r.model.fibre.count,
        spheromesh_inference::eval::BOUNDARY_TOLERANCE_PX,
        row("ResUNet", &r.model),
        row("Otsu baseline", &r.baseline),
        gain(|s| &s.hard),
        gain(|s| &s.cloud),
        gain(|s| &s.bubble),
        gain(|s| &s.fibre),
    );
    if let Some(e) = empty {
        out.push_str(&format!(
            "no-spheroid scenes: model found a polygon in {}/{} ({:.1} %), Otsu in {}/{} ({:.1} %)\n",
            e.model_with_polygons,
            e.images,
            100.0 * e.model_share(),
            e.baseline_with_polygons,
            e.images,
            100.0 * e.baseline_share()
        ));
    }
    out
}
