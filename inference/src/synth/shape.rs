//! Star-shaped irregular outlines for spheroids and debris fragments.
//!
//! The boundary is a radius function r(θ) = R · (1 + Σₖ aₖ cos(kθ + φₖ)) with a few low harmonics for the overall
//! lobed shape, many weak high harmonics for roughness, and narrow angular bumps for single cells bulging out of
//! the surface (elliptic Fourier shape models, Kuhl and Giardina, CGIP 1982, restricted to a polar radius). The
//! function is tabulated once so the renderer pays one `atan2` approximation and a table read per pixel.

use std::f32::consts::{PI, TAU};

use rand::Rng;

/// Angular resolution of the radius table.
const BINS: usize = 1024;

/// Knobs for [`Outline::random`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutlineStyle {
    /// Relative amplitude of the low harmonics (k = 2..=6); 0.05 is nearly round, 0.25 strongly lobed.
    pub(crate) lobes: f32,
    /// Relative amplitude of the high harmonics (k = 7..=40), the fine wobble of the edge.
    pub(crate) roughness: f32,
    /// Radius in pixels of the cells that bulge out of the surface; 0 disables bumps.
    pub(crate) bump_radius: f32,
}

/// A closed star-shaped boundary around `(cx, cy)`.
#[derive(Debug, Clone)]
pub(crate) struct Outline {
    pub(crate) cx: f32,
    pub(crate) cy: f32,
    /// Smallest radius of the table.
    pub(crate) r_min: f32,
    /// Largest radius of the table.
    pub(crate) r_max: f32,
    table: Vec<f32>,
    /// The low harmonics alone: a smooth envelope for halos, which would streak along narrow bumps.
    envelope: Vec<f32>,
}

impl Outline {
    /// Random outline of mean radius `radius` centred on `(cx, cy)`.
    pub(crate) fn random<R: Rng>(
        rng: &mut R,
        cx: f32,
        cy: f32,
        radius: f32,
        style: OutlineStyle,
    ) -> Self {
        let mut harmonics: Vec<(f32, f32, f32)> = Vec::new();
        for k in 2..=6u32 {
            let amp = style.lobes * rng.gen_range(0.2f32..1.0) / (k as f32 - 0.5);
            harmonics.push((k as f32, amp, rng.gen_range(0.0..TAU)));
        }
        for k in 7..=40u32 {
            let amp = style.roughness * rng.gen_range(0.0f32..1.0) * 6.0 / k as f32;
            harmonics.push((k as f32, amp, rng.gen_range(0.0..TAU)));
        }
        let mut bumps: Vec<(f32, f32, f32)> = Vec::new();
        if style.bump_radius > 0.0 {
            let count = (TAU * radius / (style.bump_radius * rng.gen_range(2.5f32..6.0))) as usize;
            for _ in 0..count {
                // A bulging cell is about as wide as it is high: a rounded bump, not a spike.
                let width = style.bump_radius * rng.gen_range(0.9f32..1.6) / radius;
                let height = style.bump_radius * rng.gen_range(-0.2f32..0.7);
                bumps.push((rng.gen_range(0.0..TAU), width, height));
            }
        }
        let low = |theta: f32| -> f32 {
            harmonics
                .iter()
                .take_while(|h| h.0 <= 6.0)
                .map(|&(k, a, phase)| a * (k * theta + phase).cos())
                .sum()
        };
        let envelope: Vec<f32> = (0..BINS)
            .map(|i| (radius * (1.0 + low(i as f32 * TAU / BINS as f32))).max(radius * 0.35))
            .collect();
        let table: Vec<f32> = (0..BINS)
            .map(|i| {
                let theta = i as f32 * TAU / BINS as f32;
                let wave: f32 = harmonics
                    .iter()
                    .map(|&(k, a, phase)| a * (k * theta + phase).cos())
                    .sum();
                let bump: f32 = bumps
                    .iter()
                    .map(|&(centre, width, height)| {
                        let d = wrap_angle(theta - centre) / width;
                        if d.abs() < 3.0 {
                            height * (-d * d).exp()
                        } else {
                            0.0
                        }
                    })
                    .sum();
                (radius * (1.0 + wave) + bump).max(radius * 0.35)
            })
            .collect();
        let r_min = table.iter().copied().fold(f32::INFINITY, f32::min);
        let r_max = table.iter().copied().fold(0.0, f32::max);
        Self {
            cx,
            cy,
            r_min,
            r_max,
            table,
            envelope,
        }
    }

    /// Fractional table position and neighbouring bins for the direction of the offset `(dx, dy)`.
    fn bins(dx: f32, dy: f32) -> (usize, usize, f32) {
        let pos = (fast_atan2(dy, dx) + PI) * (BINS as f32 / TAU);
        let i0 = (pos as usize) % BINS;
        (i0, (i0 + 1) % BINS, pos - pos.floor())
    }

    /// Boundary radius in the direction of the offset `(dx, dy)` from the centre.
    pub(crate) fn radius_towards(&self, dx: f32, dy: f32) -> f32 {
        let (i0, i1, frac) = Self::bins(dx, dy);
        self.table[i0] + (self.table[i1] - self.table[i0]) * frac
    }

    /// Like [`Outline::locate`], plus the signed distance to the smooth envelope (no bumps or roughness).
    pub(crate) fn locate_with_envelope(&self, x: f32, y: f32) -> (f32, f32, f32) {
        let (dx, dy) = (x - self.cx, y - self.cy);
        let d = (dx * dx + dy * dy).sqrt();
        let (i0, i1, frac) = Self::bins(dx, dy);
        let r = self.table[i0] + (self.table[i1] - self.table[i0]) * frac;
        let e = self.envelope[i0] + (self.envelope[i1] - self.envelope[i0]) * frac;
        (d - r, d / r, d - e)
    }

    /// Signed radial distance to the boundary (negative inside) and normalised radius ρ = d / r(θ) at `(x, y)`.
    pub(crate) fn locate(&self, x: f32, y: f32) -> (f32, f32) {
        let dx = x - self.cx;
        let dy = y - self.cy;
        let d = (dx * dx + dy * dy).sqrt();
        let r = self.radius_towards(dx, dy);
        (d - r, d / r)
    }

    /// Whether `(x, y)` lies within `margin` pixels outside the boundary (or anywhere inside).
    pub(crate) fn contains(&self, x: f32, y: f32, margin: f32) -> bool {
        self.locate(x, y).0 < margin
    }
}

/// Angle wrapped into (-π, π].
fn wrap_angle(a: f32) -> f32 {
    let mut a = a % TAU;
    if a > PI {
        a -= TAU;
    } else if a <= -PI {
        a += TAU;
    }
    a
}

/// `atan2` to about 1e-5 rad (a minimax polynomial on [0, 1] plus octant folding), several times cheaper than libm.
pub(crate) fn fast_atan2(y: f32, x: f32) -> f32 {
    let ax = x.abs();
    let ay = y.abs();
    let (lo, hi) = if ax > ay { (ay, ax) } else { (ax, ay) };
    if hi == 0.0 {
        return 0.0;
    }
    let t = lo / hi;
    let t2 = t * t;
    let mut r = (((((-0.011_721_2 * t2 + 0.052_653_32) * t2 - 0.116_432_9) * t2 + 0.193_543_5)
        * t2
        - 0.332_623_5)
        * t2
        + 0.999_977_3)
        * t;
    if ay > ax {
        r = PI / 2.0 - r;
    }
    if x < 0.0 {
        r = PI - r;
    }
    if y < 0.0 {
        -r
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn fast_atan2_matches_std() {
        for i in 0..360 {
            let a = (i as f32).to_radians() - PI + 0.001;
            let (y, x) = (a.sin() * 3.0, a.cos() * 3.0);
            assert!((fast_atan2(y, x) - y.atan2(x)).abs() < 1e-4, "angle {a}");
        }
    }

    #[test]
    fn outline_bounds_hold() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let style = OutlineStyle {
            lobes: 0.2,
            roughness: 0.01,
            bump_radius: 6.0,
        };
        let outline = Outline::random(&mut rng, 100.0, 100.0, 50.0, style);
        assert!(outline.r_min > 0.0 && outline.r_min <= outline.r_max);
        assert!(outline.contains(100.0, 100.0, 0.0));
        assert!(!outline.contains(100.0 + outline.r_max + 1.0, 100.0, 0.0));
    }
}
