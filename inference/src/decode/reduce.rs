//! Reduction of any decoded image to the model's 8-bit RGB: grey is replicated to three
//! channels, alpha is dropped, and samples wider than 8 bits are stretched linearly from the
//! image's own min..max onto 0..255.
//!
//! Why stretch instead of keeping the top byte (what OpenCV's `imread` and most viewers do):
//! microscope cameras write 10-, 12- or 14-bit data into 16-bit containers, so a 12-bit frame
//! peaks at 4095 and its top byte is at most 15 - the model would see a nearly black image.
//! The stretch uses one min and max over all colour samples (alpha excluded), so the colour
//! balance of RGB images is kept. A constant image has no range to stretch and becomes all 0.

use image::{DynamicImage, RgbImage};

/// Reduces `img` to 8-bit RGB the way [`decode_rgb8`](super::decode_rgb8) does: grey replicated,
/// alpha dropped, 16-bit and 32-bit float samples stretched from the image's own min..max onto
/// 0..255 (a constant image gives all 0; non-finite floats are left out of the range, NaN maps
/// to 0 and infinities to the nearest end). 8-bit samples are copied unchanged.
pub fn to_rgb8(img: &DynamicImage) -> RgbImage {
    let (width, height) = (img.width(), img.height());
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb.clone(),
        DynamicImage::ImageLuma8(i) => map_pixels(i.as_raw(), 1, width, height, |v| v),
        DynamicImage::ImageLumaA8(i) => map_pixels(i.as_raw(), 2, width, height, |v| v),
        DynamicImage::ImageRgba8(i) => map_pixels(i.as_raw(), 4, width, height, |v| v),
        DynamicImage::ImageLuma16(i) => stretch_u16(i.as_raw(), 1, width, height),
        DynamicImage::ImageLumaA16(i) => stretch_u16(i.as_raw(), 2, width, height),
        DynamicImage::ImageRgb16(i) => stretch_u16(i.as_raw(), 3, width, height),
        DynamicImage::ImageRgba16(i) => stretch_u16(i.as_raw(), 4, width, height),
        DynamicImage::ImageRgb32F(i) => stretch_f32(i.as_raw(), 3, width, height),
        DynamicImage::ImageRgba32F(i) => stretch_f32(i.as_raw(), 4, width, height),
        // `DynamicImage` is non-exhaustive; a future layout falls back to the crate's own
        // conversion rather than failing.
        other => other.to_rgb8(),
    }
}

/// Writes one RGB pixel per `channels`-sample input pixel: channel 0 three times for grey
/// (1 or 2 channels), channels 0..3 for colour (3 or 4); the alpha sample is never read.
fn map_pixels<T: Copy>(
    samples: &[T],
    channels: usize,
    width: u32,
    height: u32,
    to_u8: impl Fn(T) -> u8,
) -> RgbImage {
    let mut out = RgbImage::new(width, height);
    let pixels = out.chunks_exact_mut(3).zip(samples.chunks_exact(channels));
    if channels < 3 {
        for (dst, src) in pixels {
            dst.fill(to_u8(src[0]));
        }
    } else {
        for (dst, src) in pixels {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = to_u8(s);
            }
        }
    }
    out
}

/// The colour samples of each pixel (alpha excluded).
fn colour_samples<T: Copy>(samples: &[T], channels: usize) -> impl Iterator<Item = T> + '_ {
    let colour = if channels < 3 { 1 } else { 3 };
    samples
        .chunks_exact(channels)
        .flat_map(move |px| px[..colour].iter().copied())
}

fn stretch_u16(samples: &[u16], channels: usize, width: u32, height: u32) -> RgbImage {
    let (min, max) = colour_samples(samples, channels)
        .fold((u16::MAX, u16::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if max <= min {
        // Constant (or empty) image: nothing to stretch.
        return RgbImage::new(width, height);
    }
    let range = u32::from(max - min);
    map_pixels(samples, channels, width, height, |v| {
        // v is within min..=max for colour samples; round to nearest. The result is at most
        // 255, so the narrowing cannot lose anything.
        let scaled = (u32::from(v.saturating_sub(min)) * 255 + range / 2) / range;
        scaled.min(255) as u8
    })
}

fn stretch_f32(samples: &[f32], channels: usize, width: u32, height: u32) -> RgbImage {
    let (min, max) = colour_samples(samples, channels)
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(f64::from(v)), hi.max(f64::from(v)))
        });
    if max.partial_cmp(&min) != Some(std::cmp::Ordering::Greater) {
        return RgbImage::new(width, height);
    }
    // f64 so that max - min cannot overflow for extreme f32 values.
    let scale = 255.0 / (max - min);
    map_pixels(samples, channels, width, height, |v| {
        if v.is_nan() {
            0
        } else {
            // Clamped to 0..=255 first, so the cast is exact.
            ((f64::from(v) - min) * scale).round().clamp(0.0, 255.0) as u8
        }
    })
}
