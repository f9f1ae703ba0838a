//! Illumination field and defocus blur.
//!
//! Illumination is an exponential ramp (a planar gradient in log intensity, so it never reaches zero or creases)
//! times a vignette `exp(-v r²)` (the cos⁴-like fall-off of off-axis light) times an optional Gaussian hotspot,
//! normalised so its brightest point is about 1. Nothing is clamped: a clamp leaves a visible plateau edge.
//! Defocus is a separable Gaussian point-spread function, a common stand-in for the Airy/defocus disc at the
//! resolutions involved; rows are filtered in parallel, which does not change the result.

use rand::Rng;
use rayon::prelude::*;

/// Multiplicative light field over the image, peaking at about 1.
#[derive(Debug, Clone)]
pub(crate) struct Illumination {
    inv_w: f32,
    inv_h: f32,
    gradient: (f32, f32),
    vignette: f32,
    /// Hotspot centre row (fraction of the height), 1/(2σ²) in fraction² units and amplitude.
    hotspot: Option<(f32, f32, f32)>,
    /// Horizontal factor of the (separable) hotspot Gaussian for every column.
    hot_columns: Vec<f32>,
    norm: f32,
}

impl Illumination {
    /// Near-flat light, or strongly uneven light when `uneven`.
    pub(crate) fn random<R: Rng>(rng: &mut R, width: u32, height: u32, uneven: bool) -> Self {
        let angle: f32 = rng.gen_range(0.0..std::f32::consts::TAU);
        let (strength, vignette) = if uneven {
            (rng.gen_range(0.6..1.2), rng.gen_range(0.3..1.0))
        } else {
            (rng.gen_range(0.0..0.08), rng.gen_range(0.0..0.12))
        };
        let inv_w = 1.0 / width as f32;
        let mut hot_columns = Vec::new();
        let hotspot = (uneven && rng.gen_bool(0.4)).then(|| {
            let sigma: f32 = rng.gen_range(0.15..0.4);
            let (hx, hy, amp) = (
                rng.gen_range(0.2..0.8),
                rng.gen_range(0.2..0.8),
                rng.gen_range(0.3..0.7),
            );
            let k = 1.0 / (2.0 * sigma * sigma);
            hot_columns = (0..width)
                .map(|x| (-(x as f32 * inv_w - hx).powi(2) * k).exp())
                .collect();
            (hy, k, amp)
        });
        let mut light = Self {
            inv_w,
            inv_h: 1.0 / height as f32,
            gradient: (strength * angle.cos(), strength * angle.sin()),
            vignette,
            hotspot,
            hot_columns,
            norm: 1.0,
        };
        // The maximum of a smooth field is found well enough on a coarse grid of rows.
        let mut peak = f32::EPSILON;
        let mut row = vec![0.0; width as usize];
        for j in 0..=32 {
            light.fill_row(j as f32 / 32.0 * (height - 1) as f32, &mut row);
            peak = row.iter().step_by(8).fold(peak, |p, &v| p.max(v));
        }
        light.norm = 1.0 / peak;
        light
    }

    /// Writes the light level, in (0, 1] up to grid error, of every pixel of row `y` into `out` (one entry per column).
    pub(crate) fn fill_row(&self, y: f32, out: &mut [f32]) {
        let v = y * self.inv_h - 0.5;
        let hot_row = self
            .hotspot
            .map(|(hy, k, amp)| amp * (-(v + 0.5 - hy).powi(2) * k).exp());
        for (x, o) in out.iter_mut().enumerate() {
            let u = x as f32 * self.inv_w - 0.5;
            let shade =
                self.gradient.0 * u + self.gradient.1 * v - self.vignette * 2.0 * (u * u + v * v);
            let hot = match (hot_row, self.hot_columns.get(x)) {
                (Some(row), Some(column)) => 1.0 + row * column,
                _ => 1.0,
            };
            *o = shade.exp() * hot * self.norm;
        }
    }
}

/// Blurs a `width`-wide row-major buffer in place with a Gaussian of standard deviation `sigma` pixels, clamping
/// at the borders. `scratch` must have the buffer's length.
pub(crate) fn gaussian_blur(buf: &mut [f32], scratch: &mut [f32], width: usize, sigma: f32) {
    if sigma < 0.3 || width == 0 {
        return;
    }
    let radius = (sigma * 3.0).ceil() as usize;
    let mut kernel: Vec<f32> = (0..=2 * radius)
        .map(|i| {
            let d = i as f32 - radius as f32;
            (-d * d / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let total: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= total);
    let height = buf.len() / width;

    // Horizontal pass: buf -> scratch, through a border-padded copy of the row so the tap loop has no clamps
    // and vectorises like the vertical pass.
    scratch
        .par_chunks_mut(width)
        .zip(buf.par_chunks(width))
        .for_each(|(out, row)| {
            let (first, last) = (row[0], row[width - 1]);
            let padded: Vec<f32> = std::iter::repeat_n(first, radius)
                .chain(row.iter().copied())
                .chain(std::iter::repeat_n(last, radius))
                .collect();
            out.iter_mut().for_each(|o| *o = 0.0);
            for (k, weight) in kernel.iter().enumerate() {
                for (o, v) in out.iter_mut().zip(&padded[k..k + width]) {
                    *o += weight * v;
                }
            }
        });
    // Vertical pass: scratch -> buf, accumulating whole rows so the inner loop vectorises.
    let src: &[f32] = scratch;
    buf.par_chunks_mut(width).enumerate().for_each(|(y, out)| {
        out.iter_mut().for_each(|o| *o = 0.0);
        for (k, weight) in kernel.iter().enumerate() {
            let sy = (y + k).saturating_sub(radius).min(height - 1);
            let row = &src[sy * width..(sy + 1) * width];
            for (o, v) in out.iter_mut().zip(row) {
                *o += weight * v;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn blur_preserves_constant_and_mass() {
        let (w, h) = (40, 30);
        let mut flat = vec![0.5f32; w * h];
        let mut scratch = vec![0.0; w * h];
        gaussian_blur(&mut flat, &mut scratch, w, 2.0);
        assert!(flat.iter().all(|v| (v - 0.5).abs() < 1e-5));
        let mut spike = vec![0.0f32; w * h];
        spike[15 * w + 20] = 1.0;
        gaussian_blur(&mut spike, &mut scratch, w, 1.5);
        let sum: f32 = spike.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4 && spike[15 * w + 20] < 0.2);
    }

    #[test]
    fn illumination_peaks_at_one() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let light = Illumination::random(&mut rng, 300, 200, true);
        let mut values = vec![0.0; 300];
        light.fill_row(100.0, &mut values);
        assert!(values.iter().all(|v| *v > 0.0 && *v <= 1.01));
    }
}
