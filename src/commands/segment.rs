//! `spheromesh segment IMAGE`: the whole pipeline on one file, printing the
//! SpherosegV4 polygon JSON (`result_data` of the callback contract).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use spheromesh_inference::{
    postprocess::PolygonOptions, render_overlay, DecodeLimits, SegmentOptions,
};

/// Arguments of `spheromesh segment`.
#[derive(Debug, clap::Args)]
pub(crate) struct SegmentArgs {
    /// Image file (PNG, JPEG, TIFF 8/16-bit, BMP).
    image: PathBuf,
    #[command(flatten)]
    model: super::ModelArgs,
    /// Spheroid probability threshold, strictly between 0 and 1.
    #[arg(long, default_value_t = 0.5)]
    threshold: f32,
    /// Optional polygon simplification tolerance in pixels (off by default).
    #[arg(long)]
    simplify: Option<f64>,
    /// Override the network input side (multiple of 32).
    #[arg(long)]
    input_size: Option<usize>,
    /// Write the JSON here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write the predicted mask as a PNG (0/255).
    #[arg(long)]
    mask: Option<PathBuf>,
    /// Also write an overlay PNG (fill and outline over the image).
    #[arg(long)]
    overlay: Option<PathBuf>,
    /// Largest accepted file, in bytes.
    #[arg(long, default_value_t = DecodeLimits::DEFAULT_MAX_BYTES)]
    max_bytes: usize,
    /// Largest accepted image, in pixels (width x height).
    #[arg(long, default_value_t = DecodeLimits::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
}

pub(crate) fn run(args: SegmentArgs) -> anyhow::Result<()> {
    let mut model = args.model.load()?;
    if let Some(size) = args.input_size {
        model = model.with_input_size(size)?;
    }
    let limits = DecodeLimits {
        max_bytes: args.max_bytes,
        max_pixels: args.max_pixels,
    };
    let segmenter = args.model.wrap(model, limits)?;
    let opts = SegmentOptions {
        threshold: args.threshold,
        polygons: PolygonOptions {
            simplify_tolerance: args.simplify,
            ..PolygonOptions::default()
        },
    };
    let bytes =
        std::fs::read(&args.image).with_context(|| format!("reading {}", args.image.display()))?;
    let t0 = Instant::now();
    let seg = segmenter
        .segment_bytes(&bytes, &opts)
        .with_context(|| format!("segmenting {}", args.image.display()))?;
    let elapsed = t0.elapsed().as_secs_f64();
    tracing::info!(
        polygons = seg.polygons.len(),
        width = seg.width,
        height = seg.height,
        decode_ms = seg.timings.decode.as_secs_f64() * 1e3,
        preprocess_ms = seg.timings.preprocess.as_secs_f64() * 1e3,
        inference_ms = seg.timings.inference.as_secs_f64() * 1e3,
        postprocess_ms = seg.timings.postprocess.as_secs_f64() * 1e3,
        "segmented"
    );
    let json = serde_json::json!({
        "polygons": seg.polygons,
        "processing_time": elapsed,
        "image_width": seg.width,
        "image_height": seg.height,
        "threshold": args.threshold,
        "model": args.model.model.display().to_string(),
    });
    let text = serde_json::to_string_pretty(&json)?;
    match &args.out {
        Some(path) => std::fs::write(path, text + "\n")
            .with_context(|| format!("writing {}", path.display()))?,
        None => println!("{text}"),
    }
    if let Some(path) = &args.mask {
        let raw = seg.mask.as_slice().iter().map(|&v| v * 255).collect();
        image::GrayImage::from_raw(seg.width, seg.height, raw)
            .context("mask buffer")?
            .save(path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.overlay {
        let limits = DecodeLimits {
            max_bytes: args.max_bytes,
            max_pixels: args.max_pixels,
        };
        let rgb = spheromesh_inference::decode_rgb8(&bytes, &limits)?;
        render_overlay(&rgb, &seg.mask, &seg.polygons)
            .save(path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
