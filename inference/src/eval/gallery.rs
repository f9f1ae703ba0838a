//! Pictures for a person checking the model: the image, the ground truth and the model's prediction side by
//! side, each outline drawn over the image as the nodes' overlay draws it.

use image::{imageops, DynamicImage, GrayImage, RgbImage};

use crate::decode::to_rgb8;
use crate::overlay::render_overlay;
use crate::postprocess::Mask;
use crate::segment::{polygons_from_mask, SegmentError, SegmentOptions, Segmenter};

/// Gap between panels, in pixels.
const GAP: u32 = 6;

/// Three panels, each `panel_width` wide: the image, the truth's polygons over it, the model's polygons over it.
///
/// # Errors
/// [`SegmentError`] when the model fails on the image.
pub fn comparison(
    segmenter: &Segmenter,
    image: &DynamicImage,
    truth: &GrayImage,
    opts: &SegmentOptions,
    panel_width: u32,
) -> Result<RgbImage, SegmentError> {
    let rgb = to_rgb8(image);
    let predicted = segmenter.segment_image(&rgb, opts)?;
    let (w, h) = truth.dimensions();
    let truth_mask = Mask::from_vec(w, h, truth.iter().map(|&v| u8::from(v > 127)).collect())
        .unwrap_or_else(|| Mask::new(w, h));
    let (truth_mask, truth_polygons) = polygons_from_mask(&truth_mask, opts);
    let panels = [
        rgb.clone(),
        render_overlay(&rgb, &truth_mask, &truth_polygons),
        render_overlay(&rgb, &predicted.mask, &predicted.polygons),
    ];
    let panel_height = (u64::from(h) * u64::from(panel_width) / u64::from(w.max(1))).max(1) as u32;
    let mut out = RgbImage::from_pixel(
        3 * panel_width + 2 * GAP,
        panel_height,
        image::Rgb([255, 255, 255]),
    );
    for (i, panel) in panels.iter().enumerate() {
        let small = imageops::resize(
            panel,
            panel_width,
            panel_height,
            imageops::FilterType::Triangle,
        );
        imageops::replace(
            &mut out,
            &small,
            i64::from(i as u32 * (panel_width + GAP)),
            0,
        );
    }
    Ok(out)
}
