//! Classical baseline: a global Otsu threshold (N. Otsu, "A threshold selection method from gray-level
//! histograms", IEEE Trans. SMC 9(1), 1979) with the polarity read from the image itself.
//!
//! The baseline gets no tags, so it decides whether the spheroid is the dark class (brightfield) or the bright
//! class (fluorescence) from which class owns most of the image border, falling back to the smaller class when
//! the border is split. Morphology and area filtering are left to the caller, who applies the same ones to the
//! model's output.

use image::{DynamicImage, GrayImage};

/// Border share above which a class is taken to be the background outright.
const BORDER_DECISIVE: f64 = 0.65;

/// Otsu's threshold of a 256-bin histogram: values `<= t` form the dark class and values `> t` the bright class.
///
/// Maximises the between-class variance w₀w₁(μ₀ − μ₁)². When several thresholds tie (an empty gap between two
/// modes), the middle of the tied run is returned so the cut sits halfway between the modes. An empty histogram
/// or one with a single occupied bin returns that bin (0 when empty), leaving the bright class empty.
pub fn otsu_threshold(hist: &[u64; 256]) -> u8 {
    let total: u64 = hist.iter().sum();
    let weighted: f64 = hist
        .iter()
        .enumerate()
        .map(|(i, &n)| i as f64 * n as f64)
        .sum();
    let (mut w0, mut sum0) = (0u64, 0.0f64);
    let (mut best, mut lo, mut hi) = (-1.0f64, None::<usize>, 0usize);
    for (t, &n) in hist.iter().enumerate() {
        w0 += n;
        sum0 += t as f64 * n as f64;
        let w1 = total - w0;
        if w0 == 0 {
            continue;
        }
        if w1 == 0 {
            break;
        }
        let m0 = sum0 / w0 as f64;
        let m1 = (weighted - sum0) / w1 as f64;
        let between = w0 as f64 * w1 as f64 * (m0 - m1) * (m0 - m1);
        if between > best {
            (best, lo, hi) = (between, Some(t), t);
        } else if between == best && hi + 1 == t {
            hi = t;
        }
    }
    match lo {
        Some(lo) => ((lo + hi) / 2) as u8,
        // Zero or one occupied bin: no split exists.
        None => hist.iter().rposition(|&n| n > 0).unwrap_or(0) as u8,
    }
}

/// 8-bit grey version of any image: 8-bit formats by their luma, deeper ones by stretching the image's own
/// luma range min..max linearly onto 0..255 (a flat image becomes all 0).
pub fn to_grey8(image: &DynamicImage) -> GrayImage {
    match image {
        DynamicImage::ImageLuma8(grey) => grey.clone(),
        DynamicImage::ImageLumaA8(_) | DynamicImage::ImageRgb8(_) | DynamicImage::ImageRgba8(_) => {
            image.to_luma8()
        }
        _ => {
            let luma = image.to_luma32f();
            let (min, max) = luma
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                });
            let span = max - min;
            let scale = if span > 0.0 { 255.0 / span } else { 0.0 };
            let data = luma
                .iter()
                .map(|&v| ((v - min) * scale + 0.5).clamp(0.0, 255.0) as u8)
                .collect();
            GrayImage::from_vec(luma.width(), luma.height(), data)
                .unwrap_or_else(|| GrayImage::new(luma.width(), luma.height()))
        }
    }
}

/// Otsu foreground mask (0/255) of `image`: grey conversion, global threshold, and the class that is not the
/// background taken as spheroid.
pub fn otsu_foreground(image: &DynamicImage) -> GrayImage {
    let grey = to_grey8(image);
    let mut hist = [0u64; 256];
    for &v in grey.iter() {
        hist[usize::from(v)] += 1;
    }
    let t = otsu_threshold(&hist);
    let (w, h) = grey.dimensions();
    let bright_total = grey.iter().filter(|&&v| v > t).count();
    let (mut border, mut bright_border) = (0usize, 0usize);
    for (x, y, p) in grey.enumerate_pixels() {
        if x == 0 || y == 0 || x + 1 == w || y + 1 == h {
            border += 1;
            bright_border += usize::from(p[0] > t);
        }
    }
    let bright_share = bright_border as f64 / border.max(1) as f64;
    let foreground_is_bright = if bright_share >= BORDER_DECISIVE {
        false
    } else if bright_share <= 1.0 - BORDER_DECISIVE {
        true
    } else {
        // Split border: the spheroid is rarely the larger class.
        2 * bright_total < grey.len()
    };
    let mut mask = grey;
    for v in mask.iter_mut() {
        *v = if (*v > t) == foreground_is_bright {
            255
        } else {
            0
        };
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma};

    #[test]
    fn bimodal_histogram_splits_between_modes() {
        let mut hist = [0u64; 256];
        for (centre, count) in [(50usize, 1000u64), (200, 3000)] {
            for d in 0..10 {
                hist[centre - 5 + d] += count / 10;
            }
        }
        let t = otsu_threshold(&hist);
        assert!((55..195).contains(&t), "threshold {t}");
        // Two spikes with an empty gap: the cut lands mid-gap.
        let mut spikes = [0u64; 256];
        spikes[40] = 10;
        spikes[160] = 10;
        let t = otsu_threshold(&spikes);
        assert!((99..=100).contains(&t), "threshold {t}");
    }

    #[test]
    fn degenerate_histograms() {
        assert_eq!(otsu_threshold(&[0; 256]), 0);
        let mut one = [0u64; 256];
        one[77] = 5;
        assert_eq!(otsu_threshold(&one), 77);
    }

    /// A dark disc on a bright field (brightfield-like) and the inverse (fluorescence-like), in 8 and 16 bits.
    #[test]
    fn polarity_follows_the_background() {
        let disc = |x: u32, y: u32| (x as i32 - 32).pow(2) + (y as i32 - 32).pow(2) < 15 * 15;
        let dark = GrayImage::from_fn(64, 64, |x, y| Luma([if disc(x, y) { 60 } else { 190 }]));
        let bright: ImageBuffer<Luma<u16>, Vec<u16>> =
            ImageBuffer::from_fn(64, 64, |x, y| Luma([if disc(x, y) { 3000 } else { 200 }]));
        for image in [
            DynamicImage::ImageLuma8(dark),
            DynamicImage::ImageLuma16(bright),
        ] {
            let mask = otsu_foreground(&image);
            assert_eq!(mask.get_pixel(32, 32)[0], 255);
            assert_eq!(mask.get_pixel(2, 2)[0], 0);
            assert_eq!(
                mask.iter().filter(|&&v| v == 255).count(),
                (0..64 * 64).filter(|i| disc(i % 64, i / 64)).count()
            );
        }
    }
}
