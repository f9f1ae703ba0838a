//! Spheroid geometry: a union of star-shaped lobes. Each lobe's radius is a tabulated function of angle,
//! `r(θ) = R · exp(Σ a_k cos(kθ + φ_k)) + buds(θ) + ragged(θ)`: a log-radius Fourier series for the overall
//! lumpiness, narrow angular bumps for cells bulging out of the surface and fine periodic value noise for the
//! pixel-scale raggedness of the edge.

use std::f32::consts::TAU;

use rand::Rng;

use super::noise;

/// One star-shaped lobe.
#[derive(Debug, Clone)]
pub(super) struct Lobe {
    pub(super) cx: f32,
    pub(super) cy: f32,
    radius: Vec<f32>,
    smooth: Vec<f32>,
    slope: Vec<f32>,
    r_max: f32,
}

impl Lobe {
    /// A lobe centred on (cx, cy) with mean radius `r`; `lumpy` in 0..1 scales the shape irregularity and
    /// `ragged` is the edge roughness in pixels.
    pub(super) fn random(
        rng: &mut impl Rng,
        cx: f32,
        cy: f32,
        r: f32,
        lumpy: f32,
        ragged: f32,
    ) -> Self {
        let n = ((TAU * r / 1.5) as usize).clamp(128, 4096);
        let terms: Vec<(f32, f32, f32)> = (2..=9)
            .map(|k| {
                let amp = lumpy * rng.gen_range(0.0..0.16) / (k as f32 - 1.0).powf(1.1);
                (k as f32, amp, rng.gen_range(0.0..TAU))
            })
            .collect();
        let buds: Vec<(f32, f32, f32)> = (0..rng.gen_range(0..=(12.0 * lumpy) as usize + 1))
            .map(|_| {
                let width = rng.gen_range(0.03..0.12f32);
                (
                    rng.gen_range(0.0..TAU),
                    width,
                    r * width * rng.gen_range(0.2..0.7),
                )
            })
            .collect();
        let knots = ((TAU * r / rng.gen_range(3.0..9.0f32)) as usize).max(8);
        let stream = rng.gen::<u64>();
        let (smooth, radius): (Vec<f32>, Vec<f32>) = (0..n)
            .map(|i| {
                let t = i as f32 / n as f32 * TAU;
                let log: f32 = terms.iter().map(|&(k, a, p)| a * (k * t + p).cos()).sum();
                let bud: f32 = buds
                    .iter()
                    .map(|&(c, w, h)| {
                        let d = ((t - c + TAU * 1.5) % TAU) - TAU * 0.5;
                        h * (-(d / w) * (d / w)).exp()
                    })
                    .sum();
                let kf = i as f32 / n as f32 * knots as f32;
                let (k0, frac) = (kf.floor() as i64, kf.fract());
                let knot = |k: i64| {
                    noise::unit(noise::hash2(stream, k.rem_euclid(knots as i64), 0)) * 2.0 - 1.0
                };
                let rough = knot(k0) + (knot(k0 + 1) - knot(k0)) * frac * frac * (3.0 - 2.0 * frac);
                let smooth = (r * log.exp() + bud).max(2.0);
                (smooth, (smooth + ragged * rough).max(2.0))
            })
            .unzip();
        let slope = (0..n)
            .map(|i| (smooth[(i + 1) % n] - smooth[(i + n - 1) % n]) * n as f32 / (2.0 * TAU))
            .collect();
        let r_max = radius.iter().fold(0.0f32, |m, &v| m.max(v));
        Self {
            cx,
            cy,
            radius,
            smooth,
            slope,
            r_max,
        }
    }

    /// Ragged radius, smooth radius and the smooth radius' angular derivative towards angle `theta`.
    pub(super) fn radius_at(&self, theta: f32) -> (f32, f32, f32) {
        let n = self.radius.len();
        let f = (theta.rem_euclid(TAU) / TAU) * n as f32;
        let i = (f as usize).min(n - 1);
        let t = f - i as f32;
        let j = (i + 1) % n;
        let lerp = |v: &[f32]| v[i] + (v[j] - v[i]) * t;
        (lerp(&self.radius), lerp(&self.smooth), lerp(&self.slope))
    }

    /// Approximate signed distances (negative inside) to the ragged and to the smooth contour, and the
    /// normalised radius ρ/r(θ).
    pub(super) fn distance(&self, x: f32, y: f32) -> (f32, f32, f32) {
        let (dx, dy) = (x - self.cx, y - self.cy);
        let rho = (dx * dx + dy * dy).sqrt();
        let (r, rs, dr) = self.radius_at(dy.atan2(dx));
        let k = rs / (rs * rs + dr * dr).sqrt();
        ((rho - r) * k, (rho - rs) * k, rho / r)
    }

    /// Largest radius of the lobe.
    pub(super) fn r_max(&self) -> f32 {
        self.r_max
    }
}

/// A spheroid outline: the union of its lobes, with a pixel-scale wobble of the distance field.
#[derive(Debug, Clone)]
pub(super) struct Outline {
    pub(super) lobes: Vec<Lobe>,
    pub(super) wobble: f32,
    pub(super) wobble_cell: f32,
    pub(super) stream: u64,
}

impl Outline {
    /// Signed distance to the union (negative inside), the same to the smooth (unragged) union, and the dome
    /// height in 0..=1 (1 at a lobe centre).
    pub(super) fn sample(&self, x: f32, y: f32) -> (f32, f32, f32) {
        let (mut d, mut ds, mut dome) = (f32::MAX, f32::MAX, 0.0f32);
        for lobe in &self.lobes {
            let (dl, dsl, q) = lobe.distance(x, y);
            d = d.min(dl);
            ds = ds.min(dsl);
            dome = dome.max((1.0 - q * q).max(0.0).sqrt());
        }
        if self.wobble > 0.0 && d.abs() < 4.0 * self.wobble + 2.0 {
            d += self.wobble * noise::value(self.stream, x, y, self.wobble_cell);
        }
        (d, ds, dome)
    }

    /// Bounding box (x0, y0, x1, y1), unclipped, grown by `pad` pixels.
    pub(super) fn bounds(&self, pad: f32) -> (f32, f32, f32, f32) {
        let grow = pad + self.wobble + 1.0;
        self.lobes
            .iter()
            .fold((f32::MAX, f32::MAX, f32::MIN, f32::MIN), |b, l| {
                let r = l.r_max() + grow;
                (
                    b.0.min(l.cx - r),
                    b.1.min(l.cy - r),
                    b.2.max(l.cx + r),
                    b.3.max(l.cy + r),
                )
            })
    }

    /// Main lobe centre.
    pub(super) fn centre(&self) -> (f32, f32) {
        self.lobes.first().map_or((0.0, 0.0), |l| (l.cx, l.cy))
    }
}

impl Outline {
    /// The outline moved by (dx, dy).
    pub(super) fn translated(mut self, dx: f32, dy: f32) -> Self {
        for lobe in &mut self.lobes {
            lobe.cx += dx;
            lobe.cy += dy;
        }
        self
    }

    /// Distance from the main centre to the outermost edge crossing towards `theta`.
    pub(super) fn reach(&self, theta: f32) -> f32 {
        let (cx, cy) = self.centre();
        let (b0, b1, b2, b3) = self.bounds(0.0);
        let mut r = (b2 - b0).max(b3 - b1);
        let (ux, uy) = (theta.cos(), theta.sin());
        while r > 0.0 && self.sample(cx + ux * r, cy + uy * r).0 > 0.0 {
            r -= 1.0;
        }
        r.max(0.0)
    }
}
