//! `spheromesh synth`: write one synthetic micrograph and its ground-truth
//! mask, to try the pipeline or make test images.

use std::path::PathBuf;

use anyhow::Context;

/// Arguments of `spheromesh synth`.
#[derive(Debug, clap::Args)]
pub(crate) struct SynthArgs {
    /// Sample seed (the training pool uses 1000000.., the default eval set 7000000..).
    #[arg(long, default_value_t = 9_000_000)]
    seed: u64,
    /// Output image (PNG keeps 16-bit samples; JPEG/TIFF/BMP by extension).
    #[arg(long)]
    out: PathBuf,
    /// Also write the ground-truth mask (0/255 PNG).
    #[arg(long)]
    mask: Option<PathBuf>,
}

pub(crate) fn run(args: SynthArgs) -> anyhow::Result<()> {
    let sample = spheromesh_inference::synth::generate(args.seed);
    let ext = args
        .out
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let image = if matches!(ext.as_str(), "jpg" | "jpeg" | "bmp") {
        // These encoders take 8-bit data only: reduce the way the pipeline does.
        image::DynamicImage::ImageRgb8(spheromesh_inference::to_rgb8(&sample.image))
    } else {
        sample.image
    };
    image
        .save(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    if let Some(path) = &args.mask {
        sample
            .mask
            .save(path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{}", serde_json::to_string(&sample.tags)?);
    Ok(())
}
