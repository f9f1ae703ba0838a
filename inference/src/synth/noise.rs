//! Deterministic noise sources for the synthetic spheroid renderer.
//!
//! Per-pixel randomness is counter based: the SplitMix64 finaliser (Steele, Lea and Flood, "Fast splittable
//! pseudorandom number generators", OOPSLA 2014) hashes `(stream, x, y)`, so every row can be rendered on any
//! thread and the bytes still depend only on the sample's seed. Smooth texture is lattice value noise (the
//! value-noise variant of Perlin, "An image synthesizer", SIGGRAPH 1985) summed over octaves as fractional
//! Brownian motion.

use rand::Rng;

/// Golden-ratio increment of SplitMix64; spreads consecutive counters over the whole `u64` range.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64 finaliser: a bijective 64-bit mixer with full avalanche.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 64 random bits owned by pixel `(x, y)` of the noise stream `stream`.
pub(crate) fn pixel_bits(stream: u64, x: u32, y: u32) -> u64 {
    let counter = (u64::from(y) << 32) | u64::from(x);
    mix64(stream ^ counter.wrapping_add(1).wrapping_mul(GOLDEN))
}

/// Approximately standard normal deviate built from 64 random bits.
///
/// The sum of four 16-bit uniforms (Irwin-Hall, n = 4) is close to Gaussian, has no transcendental calls and is
/// bounded at ±3.46 σ, which is harmless for camera noise and keeps outliers from saturating pixels.
pub(crate) fn gauss_from_bits(bits: u64) -> f32 {
    let sum = (bits & 0xffff) + ((bits >> 16) & 0xffff) + ((bits >> 32) & 0xffff) + (bits >> 48);
    (sum as f32 / 65_535.0 - 2.0) * 1.732_050_8
}

/// One octave of 2-D value noise on a square lattice, sampled with smoothstep interpolation.
#[derive(Debug, Clone)]
pub(crate) struct ValueNoise {
    inv_cell: f32,
    cols: usize,
    rows: usize,
    values: Vec<f32>,
}

impl ValueNoise {
    /// Lattice with spacing `cell` pixels covering a `width` x `height` image, values uniform in [-1, 1].
    pub(crate) fn new<R: Rng>(rng: &mut R, width: u32, height: u32, cell: f32) -> Self {
        let cell = cell.max(1.0);
        let cols = (width as f32 / cell).ceil() as usize + 2;
        let rows = (height as f32 / cell).ceil() as usize + 2;
        // A per-lattice stream keeps the draw count from the sample RNG small and independent of the size.
        let stream: u64 = rng.gen();
        let values = (0..cols * rows)
            .map(|i| {
                let bits = mix64(stream ^ (i as u64).wrapping_add(1).wrapping_mul(GOLDEN));
                (bits >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect();
        Self {
            inv_cell: 1.0 / cell,
            cols,
            rows,
            values,
        }
    }

    /// Noise value in [-1, 1] at pixel coordinates `(x, y)`; coordinates outside the image are clamped.
    #[cfg(test)]
    pub(crate) fn sample(&self, x: f32, y: f32) -> f32 {
        let mut out = [0.0];
        self.add_row(y, x, 1.0, &mut out);
        out[0]
    }

    /// Adds `weight` times the noise along row `y` to `out`, whose first element is at column `x0`.
    ///
    /// Working a row at a time hoists the vertical interpolation out of the pixel loop, which matters because
    /// texture is sampled for every spheroid and background pixel.
    pub(crate) fn add_row(&self, y: f32, x0: f32, weight: f32, out: &mut [f32]) {
        let gy = (y * self.inv_cell).max(0.0);
        let iy = (gy as usize).min(self.rows - 2);
        let fy = smooth(gy - iy as f32);
        let top = &self.values[iy * self.cols..(iy + 1) * self.cols];
        let bottom = &self.values[(iy + 1) * self.cols..(iy + 2) * self.cols];
        let column = |i: usize| top[i] + (bottom[i] - top[i]) * fy;
        for (i, o) in out.iter_mut().enumerate() {
            let gx = ((x0 + i as f32) * self.inv_cell).max(0.0);
            let ix = (gx as usize).min(self.cols - 2);
            let fx = smooth(gx - ix as f32);
            *o += weight * lerp(column(ix), column(ix + 1), fx);
        }
    }
}

/// Fractional Brownian motion: octaves of [`ValueNoise`] with halving cell size and decaying weight.
#[derive(Debug, Clone)]
pub(crate) struct Fbm {
    octaves: Vec<(ValueNoise, f32)>,
}

impl Fbm {
    /// `count` octaves starting at cell size `cell`, each next octave half the size with weight times `gain`.
    pub(crate) fn new<R: Rng>(
        rng: &mut R,
        width: u32,
        height: u32,
        cell: f32,
        count: usize,
        gain: f32,
    ) -> Self {
        let mut octaves = Vec::with_capacity(count);
        let (mut size, mut weight, mut total) = (cell, 1.0f32, 0.0f32);
        for _ in 0..count {
            octaves.push((ValueNoise::new(rng, width, height, size), weight));
            total += weight;
            size *= 0.5;
            weight *= gain;
        }
        // Normalise so the sum stays within [-1, 1].
        for octave in &mut octaves {
            octave.1 /= total.max(f32::EPSILON);
        }
        Self { octaves }
    }

    /// Writes the summed noise (in [-1, 1]) along row `y` into `out`, whose first element is at column `x0`.
    pub(crate) fn fill_row(&self, y: f32, x0: f32, out: &mut [f32]) {
        out.iter_mut().for_each(|o| *o = 0.0);
        for (noise, weight) in &self.octaves {
            noise.add_row(y, x0, *weight, out);
        }
    }

    /// Summed noise at `(x, y)`; for sparse lookups, rows should use [`Fbm::fill_row`].
    pub(crate) fn sample(&self, x: f32, y: f32) -> f32 {
        let mut out = [0.0];
        self.fill_row(y, x, &mut out);
        out[0]
    }
}

/// Hermite smoothstep of a fraction in [0, 1].
fn smooth(t: f32) -> f32 {
    t * t * (3.0 - 2.0 * t)
}

/// Linear interpolation between `a` and `b`.
fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

/// Smooth 0→1 transition as `x` moves from `edge0` to `edge1` (either order).
pub(crate) fn smoothstep(edge0: f32, edge1: f32, x: f32) -> f32 {
    let t = ((x - edge0) / (edge1 - edge0)).clamp(0.0, 1.0);
    smooth(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn gauss_has_unit_variance() {
        let n = 20_000u32;
        let samples: Vec<f32> = (0..n)
            .map(|i| gauss_from_bits(pixel_bits(7, i, 3)))
            .collect();
        let mean = samples.iter().sum::<f32>() / n as f32;
        let var = samples.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n as f32;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
    }

    #[test]
    fn value_noise_is_bounded_and_continuous() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let noise = ValueNoise::new(&mut rng, 200, 100, 16.0);
        let mut previous = noise.sample(0.0, 50.0);
        for i in 1..2000 {
            let v = noise.sample(i as f32 * 0.1, 50.0);
            assert!((-1.0..=1.0).contains(&v));
            assert!((v - previous).abs() < 0.1, "jump at {i}");
            previous = v;
        }
    }
}
