//! Training data: a pool of synthetic samples at the network resolution, and
//! random batches with dihedral augmentation (flips and 90-degree turns, under
//! which a micrograph's labels are invariant).

use image::GrayImage;
use rand::Rng;
use rayon::prelude::*;

use crate::decode::to_rgb8;
use crate::preprocess::to_model_input;
use crate::synth;

/// One training pair at `size x size`: CHW pixels in `[0,1]` and the soft
/// target (fraction of each network pixel's footprint that is spheroid).
#[derive(Debug, Clone)]
pub(crate) struct Example {
    pub(crate) pixels: Vec<f32>,
    pub(crate) target: Vec<f32>,
}

/// Renders `drawn` training draws of `generator` from seeds `first_seed..`, then `empty`
/// no-spheroid scenes from the seeds after them (in parallel, deterministic).
pub(crate) fn build_pool(
    generator: synth::Generator,
    first_seed: u64,
    (drawn, empty): (usize, usize),
    size: u32,
    progress: &(dyn Fn(usize) + Sync),
) -> Vec<Example> {
    let done = std::sync::atomic::AtomicUsize::new(0);
    (0..(drawn + empty) as u64)
        .into_par_iter()
        .map(|i| {
            let seed = first_seed + i;
            let sample = if i < drawn as u64 {
                synth::generate_with(generator, seed)
            } else {
                synth::generate_empty(seed)
            };
            let pixels = to_model_input(&to_rgb8(&sample.image), size);
            let target = area_fraction(&sample.mask, size);
            progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1);
            Example { pixels, target }
        })
        .collect()
}

/// Box-filters a 0/255 mask onto a `size x size` grid: each output cell is the
/// foreground fraction of the source pixels whose centres fall in it. This is
/// the label that a threshold at 0.5 followed by a nearest resize back can
/// reproduce best (majority vote per cell).
pub(crate) fn area_fraction(mask: &GrayImage, size: u32) -> Vec<f32> {
    let (w, h) = mask.dimensions();
    let s = size as usize;
    let bounds = |n: u32| -> Vec<(usize, usize)> {
        (0..s)
            .map(|i| {
                let lo = (i as u64 * n as u64 / s as u64) as usize;
                let hi = (((i + 1) as u64 * n as u64).div_ceil(s as u64) as usize).max(lo + 1);
                (lo, hi.min(n as usize))
            })
            .collect()
    };
    let (xs, ys) = (bounds(w), bounds(h));
    let raw = mask.as_raw();
    let mut out = vec![0f32; s * s];
    for (oy, &(y0, y1)) in ys.iter().enumerate() {
        for (ox, &(x0, x1)) in xs.iter().enumerate() {
            let mut fg = 0u32;
            for y in y0..y1 {
                fg += raw[y * w as usize + x0..y * w as usize + x1]
                    .iter()
                    .filter(|&&v| v > 127)
                    .count() as u32;
            }
            out[oy * s + ox] = fg as f32 / ((y1 - y0) * (x1 - x0)) as f32;
        }
    }
    out
}

/// Applies one of the 8 symmetries of the square to a `channels x s x s` image.
pub(crate) fn dihedral(src: &[f32], channels: usize, s: usize, which: u8) -> Vec<f32> {
    let mut out = vec![0f32; src.len()];
    for c in 0..channels {
        let plane = &src[c * s * s..(c + 1) * s * s];
        let dst = &mut out[c * s * s..(c + 1) * s * s];
        for y in 0..s {
            for x in 0..s {
                let (mut sx, mut sy) = (x, y);
                if which & 1 != 0 {
                    sx = s - 1 - sx;
                }
                if which & 2 != 0 {
                    sy = s - 1 - sy;
                }
                if which & 4 != 0 {
                    std::mem::swap(&mut sx, &mut sy);
                }
                dst[y * s + x] = plane[sy * s + sx];
            }
        }
    }
    out
}

/// Cuts the `crop x crop` window at `(x0, y0)` out of a `channels x s x s` image.
fn crop_window(
    src: &[f32],
    channels: usize,
    s: usize,
    crop: usize,
    x0: usize,
    y0: usize,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(channels * crop * crop);
    for c in 0..channels {
        for y in y0..y0 + crop {
            out.extend_from_slice(&src[(c * s + y) * s + x0..][..crop]);
        }
    }
    out
}

/// Draws a batch of random `crop x crop` windows (same scale as inference:
/// the network is fully convolutional), each under a random symmetry:
/// pixels `[B,3,crop,crop]` and targets `[B,1,crop,crop]`.
pub(crate) fn sample_batch<R: Rng>(
    pool: &[Example],
    batch: usize,
    s: usize,
    crop: usize,
    rng: &mut R,
) -> (Vec<f32>, Vec<f32>) {
    let mut pixels = Vec::with_capacity(batch * 3 * crop * crop);
    let mut targets = Vec::with_capacity(batch * crop * crop);
    for _ in 0..batch {
        let ex = &pool[rng.gen_range(0..pool.len())];
        let (x0, y0) = (rng.gen_range(0..=s - crop), rng.gen_range(0..=s - crop));
        let which: u8 = rng.gen_range(0..8);
        pixels.extend(dihedral(
            &crop_window(&ex.pixels, 3, s, crop, x0, y0),
            3,
            crop,
            which,
        ));
        targets.extend(dihedral(
            &crop_window(&ex.target, 1, s, crop, x0, y0),
            1,
            crop,
            which,
        ));
    }
    (pixels, targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_fraction_averages_footprints() {
        let mut m = GrayImage::new(4, 4);
        for y in 0..2 {
            for x in 0..4 {
                m.put_pixel(x, y, image::Luma([255]));
            }
        }
        m.put_pixel(0, 2, image::Luma([255]));
        assert_eq!(area_fraction(&m, 2), vec![1.0, 1.0, 0.25, 0.0]);
    }

    #[test]
    fn extra_empty_scenes_follow_the_draws_with_empty_targets() {
        let pool = build_pool(synth::Generator::V2, 5_000, (2, 2), 64, &|_| {});
        assert_eq!(pool.len(), 4);
        for ex in &pool[2..] {
            assert!(ex.target.iter().all(|&t| t == 0.0));
        }
        let drawn_target: f32 = pool[..2].iter().flat_map(|ex| &ex.target).sum();
        assert!(
            drawn_target > 0.0,
            "draws of seeds 5000..5002 hold no spheroid"
        );
    }

    #[test]
    fn dihedral_group_elements_are_distinct_permutations() {
        let src: Vec<f32> = (0..9).map(|v| v as f32).collect();
        let all: Vec<_> = (0..8).map(|w| dihedral(&src, 1, 3, w)).collect();
        for (i, a) in all.iter().enumerate() {
            let mut sorted = a.clone();
            sorted.sort_by(f32::total_cmp);
            assert_eq!(sorted, src);
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
