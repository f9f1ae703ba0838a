//! Specimen layer: objects are composited, each only within its bounding box, into a relative transmittance map
//! (brightfield, 1 = clear medium) or an emission map (fluorescence, 0 = nothing), and spheroids into a label map.

use super::clutter::{Blob, Bubble, Fibre};
use super::noise;
use super::scene::{Body, Scene};

/// The specimen as seen through a perfect lens.
#[derive(Debug)]
pub(super) struct Canvas {
    pub(super) w: usize,
    pub(super) h: usize,
    pub(super) bf: bool,
    /// Transmittance (brightfield) or emission (fluorescence).
    pub(super) value: Vec<f32>,
    /// 0 outside spheroids, else 1 + the index of the first spheroid covering the pixel.
    pub(super) label: Vec<u8>,
    /// Brightfield halo added outside the spheroids.
    halo: Vec<f32>,
    /// Whether two spheroids overlap.
    pub(super) overlap: bool,
}

impl Canvas {
    pub(super) fn new(w: usize, h: usize, bf: bool) -> Self {
        let value = vec![if bf { 1.0 } else { 0.0 }; w * h];
        Self {
            w,
            h,
            bf,
            value,
            label: vec![0; w * h],
            halo: Vec::new(),
            overlap: false,
        }
    }

    /// Calls `f(x, y, index)` for the pixels of a box, clipped to the canvas.
    fn each(&mut self, b: (f32, f32, f32, f32), mut f: impl FnMut(&mut Self, f32, f32, usize)) {
        let x0 = b.0.floor().max(0.0) as usize;
        let y0 = b.1.floor().max(0.0) as usize;
        let x1 = (b.2.ceil().max(0.0) as usize).min(self.w);
        let y1 = (b.3.ceil().max(0.0) as usize).min(self.h);
        for y in y0..y1 {
            for x in x0..x1 {
                f(self, x as f32 + 0.5, y as f32 + 0.5, y * self.w + x);
            }
        }
    }

    /// Painter's compositing (brightfield) or additive emission (fluorescence) with coverage `alpha`.
    fn put(&mut self, i: usize, alpha: f32, v: f32) {
        if self.bf {
            self.value[i] += alpha * (v - self.value[i]);
        } else {
            self.value[i] += alpha * v;
        }
    }

    pub(super) fn blob(&mut self, b: &Blob, stream: u64) {
        let pad = b.r + b.soft + 1.0;
        self.each(
            (b.x - pad, b.y - pad, b.x + pad, b.y + pad),
            |c, x, y, i| {
                let rho = (x - b.x).hypot(y - b.y);
                let alpha = noise::step(b.r + b.soft, b.r - b.soft, rho);
                if alpha <= 0.0 {
                    return;
                }
                let q = rho / b.r;
                let grain = 1.0 + b.grain * noise::value(stream, x, y, 1.3);
                let v = if c.bf {
                    (b.level * (1.0 - b.ring * noise::step(0.45, 1.0, q))
                        + b.spot * (1.0 - q * q).max(0.0))
                        * grain
                } else {
                    b.level * (1.0 - 0.5 * q * q).max(0.0) * grain
                };
                c.put(i, alpha, v);
            },
        );
    }

    pub(super) fn bubble(&mut self, b: &Bubble) {
        let inner = b.r * (1.0 - b.rim);
        let pad = b.r + 2.0;
        self.each(
            (b.x - pad, b.y - pad, b.x + pad, b.y + pad),
            |c, x, y, i| {
                let rho = (x - b.x).hypot(y - b.y);
                let alpha = noise::step(b.r + 1.0, b.r - 1.0, rho);
                if alpha <= 0.0 {
                    return;
                }
                // Refraction darkens the rim most near its outer part; a thin glint sits just inside it.
                let u = ((rho - inner) / (b.r - inner)).clamp(0.0, 1.0);
                let rim = noise::step(-0.05, 0.35, u) * (1.0 - 0.4 * noise::step(0.8, 1.0, u));
                let glint = b.glint * (-((rho - inner + 1.5) / 1.5).powi(2)).exp();
                if c.bf {
                    let v = b.interior + glint + (b.rim_level - b.interior) * rim;
                    c.put(i, alpha, v);
                } else {
                    // Out of the focal plane a bubble blocks some emission and scatters a little at its rim.
                    let keep = 1.0 - alpha * (1.0 - b.rim_level) * (0.5 + 0.5 * rim);
                    c.value[i] = c.value[i] * keep + 0.03 * glint;
                }
            },
        );
    }

    pub(super) fn fibre(&mut self, f: &Fibre) {
        let half = f.width * 0.5;
        let last = f.points.len().saturating_sub(2);
        for (k, seg) in f.points.windows(2).enumerate() {
            let ((ax, ay), (bx, by)) = (seg[0], seg[1]);
            let pad = half + 1.5;
            let bbox = (
                ax.min(bx) - pad,
                ay.min(by) - pad,
                ax.max(bx) + pad,
                ay.max(by) + pad,
            );
            let (dx, dy) = (bx - ax, by - ay);
            let len2 = (dx * dx + dy * dy).max(1e-6);
            let opacity = (2.0 * half).min(1.0) * if self.bf { 0.6 } else { 0.4 };
            self.each(bbox, |c, x, y, i| {
                // Each pixel belongs to the segment it projects onto, so joints are not painted twice.
                let t = ((x - ax) * dx + (y - ay) * dy) / len2;
                if (t < 0.0 && k > 0) || (t >= 1.0 && k < last) {
                    return;
                }
                let t = t.clamp(0.0, 1.0);
                let dist = (x - ax - t * dx).hypot(y - ay - t * dy);
                let alpha = noise::step(half + 0.7, half - 0.7, dist) * opacity;
                if alpha > 0.0 {
                    c.put(i, alpha, f.level);
                }
            });
        }
    }

    pub(super) fn body(&mut self, b: &Body, id: u8) {
        let halo_pad = if self.bf && b.halo > 0.0 {
            b.halo_at * 8.0
        } else {
            0.0
        };
        if halo_pad > 0.0 && self.halo.is_empty() {
            self.halo = vec![0.0; self.w * self.h];
        }
        let core_at = (1.0 - b.core * b.core).sqrt();
        self.each(b.outline.bounds(b.soft * 2.0 + halo_pad), |c, x, y, i| {
            let (d, smooth_d, dome) = b.outline.sample(x, y);
            if d > 0.0 && halo_pad > 0.0 {
                // The defocus ring follows the smoothed outline, not every pixel-scale notch.
                let u = smooth_d.max(0.0) / b.halo_at;
                let slot = &mut c.halo[i];
                *slot = slot.max(b.halo * u * (1.0 - u).exp());
            }
            if d < 0.0 {
                match c.label[i] {
                    0 => c.label[i] = id,
                    l if l != id => c.overlap = true,
                    _ => {}
                }
            }
            let alpha = noise::step(b.soft, -b.soft, d);
            if alpha <= 0.0 {
                return;
            }
            let core = if b.core > 0.0 {
                b.core_dark * noise::step(core_at - 0.06, core_at + 0.06, dome)
            } else {
                0.0
            };
            let (f1, f2, cell_id) = noise::worley(b.stream, x, y, b.cell);
            let grain = b.grain * noise::fbm2(b.stream ^ 1, x, y, 1.6);
            let rim = b.rim * noise::step(b.rim_width, 0.0, -d);
            let v = if c.bf {
                let base = b.edge + (b.centre - b.edge) * dome.powf(b.dome_power);
                let membrane = 1.0 - noise::step(0.0, 0.3, f2 - f1);
                let (g1, _, _) = noise::worley(b.stream ^ 2, x, y, b.cell * 0.5);
                let granules = 0.8 - 1.6 * g1.min(1.0);
                let tex = b.patch * (noise::unit(cell_id) - 0.5) - b.membrane * membrane + granules;
                base * (1.0 - core) * (1.0 + b.texture * tex + grain + rim)
            } else {
                let base = b.edge + (b.centre - b.edge) * dome.powf(b.dome_power);
                let nucleus = (1.0 - 1.7 * f1).max(0.0);
                let tex = 1.2 * nucleus * nucleus * (0.5 + noise::unit(cell_id)) - 0.35;
                base * (1.0 - core) * (1.0 + 1.5 * b.texture * tex + grain + 0.5 * rim)
            };
            c.put(i, alpha, v.max(0.0));
        });
    }

    /// Adds the brightfield halo outside the spheroids.
    fn add_halo(&mut self) {
        for ((v, h), l) in self.value.iter_mut().zip(&self.halo).zip(&self.label) {
            if *l == 0 {
                *v += *h;
            }
        }
    }
}

/// Paints the specimen of `scene`: clutter under the spheroids, the spheroids and their halos, fibres on top.
pub(super) fn paint(scene: &Scene) -> Canvas {
    let mut canvas = Canvas::new(
        scene.width as usize,
        scene.height as usize,
        scene.brightfield,
    );
    for (k, blob) in scene.blobs().enumerate() {
        canvas.blob(blob, noise::mix(scene.stream ^ k as u64));
    }
    for bubble in scene.bubbles() {
        canvas.bubble(bubble);
    }
    for (k, body) in scene.bodies.iter().enumerate() {
        canvas.body(body, k as u8 + 1);
    }
    canvas.add_halo();
    for fibre in scene.fibres() {
        canvas.fibre(fibre);
    }
    canvas
}
