//! Generator v2: what real plates show besides a clean spheroid, drawn on top of a v1 scene.
//!
//! * clouds of migrating or dispersed single cells around a spheroid, lighter and more granular than it, often
//!   touching its edge;
//! * air bubbles: a light interior inside a thick dark refractive rim (brightfield), a dim disc with a faint bright
//!   rim (fluorescence), sometimes pressed against a spheroid;
//! * long fibres and straight scratches across the field, some crossing a spheroid's edge;
//! * the well's edge and its meniscus: a dark arc with a broad fall-off of light towards it;
//! * per-object defocus (each object is either in the focal plane or drawn into a layer that is blurred), broader
//!   halos, spheroids from very dark to medium grey with more inner texture, and JPEG compression.
//!
//! None of this is ever in the mask. All of it is planned from its own random stream, after the v1 scene, so a
//! v1 sample stays byte for byte what it was.

use std::f32::consts::TAU;

use rand::Rng;
use rayon::prelude::*;

use super::look::{Body, Halo};
use super::noise::smoothstep;
use super::optics::gaussian_blur;
use super::Modality;

/// A granular single cell of a cloud: a disc, a refractile centre and a rim.
#[derive(Debug, Clone, Copy)]
struct Dot {
    x: f32,
    y: f32,
    radius: f32,
    amp: f32,
    centre: f32,
}

/// An air bubble.
#[derive(Debug, Clone, Copy)]
struct Bubble {
    x: f32,
    y: f32,
    radius: f32,
    rim_width: f32,
    rim: f32,
    inner: f32,
}

/// A fibre (curved, absorbing) or a scratch (straight; lighter in brightfield).
#[derive(Debug, Clone)]
struct Strand {
    points: Vec<(f32, f32)>,
    width: f32,
    amp: f32,
}

/// The well's wall crossing the field: light multiplies by [`WellEdge::factor`].
#[derive(Debug, Clone, Copy)]
struct WellEdge {
    cx: f32,
    cy: f32,
    radius: f32,
    band: f32,
    band_depth: f32,
    meniscus: f32,
    meniscus_depth: f32,
    outside: f32,
}

impl WellEdge {
    fn factor(&self, x: f32, y: f32) -> f32 {
        let d = self.radius - ((x - self.cx).powi(2) + (y - self.cy).powi(2)).sqrt();
        let inside = 1.0 - self.meniscus_depth * (-d.max(0.0) / self.meniscus).exp();
        let level = self.outside + (inside - self.outside) * smoothstep(-2.0, 2.0, d);
        level * (1.0 - self.band_depth * (-(d / self.band).powi(2)).exp())
    }
}

/// The v2 objects of one scene. Objects with `true` in their `focus` entry are sharp; the others are blurred by
/// `defocus`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plate {
    dots: Vec<(Dot, bool)>,
    bubbles: Vec<(Bubble, bool)>,
    strands: Vec<(Strand, bool)>,
    well: Option<WellEdge>,
    defocus: f32,
    /// JPEG quality for 8-bit outputs, if this sample is compressed.
    pub(crate) jpeg_quality: Option<u8>,
}

impl Plate {
    /// Whether a cell cloud, a bubble or a long fibre was drawn: (cloud, bubble, fibre).
    pub(crate) fn tags(&self) -> (bool, bool, bool) {
        (
            self.dots.len() >= 40,
            !self.bubbles.is_empty(),
            !self.strands.is_empty(),
        )
    }
}

/// Plans the v2 additions and restyles `bodies` and `halo` in place. `empty` removes every spheroid and makes
/// sure at least one of cloud, bubble or fibre is drawn.
pub(crate) fn plan<R: Rng>(
    rng: &mut R,
    modality: Modality,
    bodies: &mut Vec<Body>,
    halo: &mut Option<Halo>,
    empty: bool,
    (width, height, scale): (u32, u32, f32),
) -> Plate {
    let (w, h) = (width as f32, height as f32);
    let bright = modality == Modality::Fluorescence;
    let tone = rng.gen_range(0.5..1.35);
    let grain = rng.gen_range(0.0..0.3);
    for body in bodies.iter_mut() {
        body.retone(tone * rng.gen_range(0.9..1.1), grain);
    }
    if let (Some(halo), false, true) = (halo.as_mut(), bright, rng.gen_bool(0.45)) {
        halo.width *= rng.gen_range(1.5..4.0);
        halo.offset *= rng.gen_range(1.0..2.5);
    }
    let anchors: Vec<(f32, f32, f32)> = if empty {
        bodies.clear();
        *halo = None;
        (0..2)
            .map(|_| {
                let r = rng.gen_range(60.0..250.0) * scale;
                (rng.gen_range(0.0..w), rng.gen_range(0.0..h), r)
            })
            .collect()
    } else {
        bodies
            .iter()
            .map(|b| {
                (
                    b.outline.cx,
                    b.outline.cy,
                    0.5 * (b.outline.r_min + b.outline.r_max),
                )
            })
            .collect()
    };
    let inside =
        |bodies: &[Body], x: f32, y: f32| bodies.iter().any(|b| b.outline.contains(x, y, 0.0));
    let (mut cloud, mut bubble, mut fibre) =
        (rng.gen_bool(0.35), rng.gen_bool(0.25), rng.gen_bool(0.3));
    if empty && !(cloud || bubble || fibre) {
        match rng.gen_range(0..3) {
            0 => cloud = true,
            1 => bubble = true,
            _ => fibre = true,
        }
    }
    let mut plate = Plate {
        defocus: rng.gen_range(1.5..6.0) * scale.max(0.5),
        ..Plate::default()
    };
    let cell_scale = scale.max(0.5);
    if cloud {
        for _ in 0..rng.gen_range(1..=2) {
            let (ax, ay, ar) = anchors[rng.gen_range(0..anchors.len())];
            let dense = rng.gen_bool(0.5);
            let count = if dense {
                rng.gen_range(300..1400)
            } else {
                rng.gen_range(60..300)
            };
            let reach = rng.gen_range(15.0..90.0) * scale;
            let amp = if bright {
                rng.gen_range(0.05..0.3)
            } else {
                rng.gen_range(0.08..0.4)
            };
            let focus = rng.gen_bool(0.6);
            for _ in 0..(count as f32 * scale.powi(2).max(0.3)) as usize {
                let angle: f32 = rng.gen_range(0.0..TAU);
                let d = if empty {
                    // Dispersed cells with no spheroid left: spread evenly over a disc.
                    ar * rng.gen::<f32>().sqrt()
                } else {
                    ar - rng.gen_range(0.0..0.1) * ar - reach * rng.gen::<f32>().max(1e-4).ln()
                };
                let (x, y) = (ax + d * angle.cos(), ay + d * angle.sin());
                if inside(bodies, x, y) {
                    continue;
                }
                let dot = Dot {
                    x,
                    y,
                    radius: rng.gen_range(2.5..7.5) * cell_scale,
                    amp: amp * rng.gen_range(0.6..1.4),
                    centre: if bright { 0.0 } else { rng.gen_range(0.2..1.0) },
                };
                plate.dots.push((dot, focus));
            }
        }
    }
    if bubble {
        for _ in 0..rng.gen_range(1..=3) {
            let radius = rng.gen_range(15.0..130.0) * scale;
            let mut placed = None;
            for _ in 0..20 {
                let (x, y) = if !bodies.is_empty() && rng.gen_bool(0.5) {
                    let body = &bodies[rng.gen_range(0..bodies.len())].outline;
                    let angle: f32 = rng.gen_range(0.0..TAU);
                    let d = body.radius_towards(angle.cos(), angle.sin())
                        + radius * rng.gen_range(0.95..1.1);
                    (body.cx + d * angle.cos(), body.cy + d * angle.sin())
                } else {
                    (rng.gen_range(0.0..w), rng.gen_range(0.0..h))
                };
                let clear = (0..16).all(|k| {
                    let a = k as f32 * TAU / 16.0;
                    !inside(
                        bodies,
                        x + 0.9 * radius * a.cos(),
                        y + 0.9 * radius * a.sin(),
                    )
                }) && !inside(bodies, x, y);
                if clear {
                    placed = Some((x, y));
                    break;
                }
            }
            if let Some((x, y)) = placed {
                let b = Bubble {
                    x,
                    y,
                    radius,
                    rim_width: rng.gen_range(0.06..0.2) * radius + 1.5,
                    rim: if bright {
                        rng.gen_range(0.03..0.15)
                    } else {
                        rng.gen_range(0.5..1.8)
                    },
                    inner: if bright {
                        -rng.gen_range(0.0..0.5)
                    } else {
                        -rng.gen_range(0.03..0.2)
                    },
                };
                plate.bubbles.push((b, rng.gen_bool(0.7)));
            }
        }
    }
    if fibre {
        let diagonal = (w * w + h * h).sqrt();
        for _ in 0..rng.gen_range(1..=3) {
            let scratch = rng.gen_bool(0.4);
            let (mut x, mut y) = (rng.gen_range(0.0..w), rng.gen_range(0.0..h));
            let mut heading: f32 = rng.gen_range(0.0..TAU);
            let length = rng.gen_range(0.4..1.2) * diagonal;
            // Start outside the frame half the time, so the strand enters from an edge.
            x -= 0.5 * length * heading.cos();
            y -= 0.5 * length * heading.sin();
            let step = 3.0;
            let bend = if scratch {
                0.0
            } else {
                rng.gen_range(0.005..0.06)
            };
            let mut points = vec![(x, y)];
            for _ in 0..(length / step) as usize {
                heading += rng.gen_range(-bend..=bend);
                x += step * heading.cos();
                y += step * heading.sin();
                points.push((x, y));
            }
            let amp = match (bright, scratch) {
                (false, true) => -rng.gen_range(0.1..0.35),
                (false, false) => rng.gen_range(0.2..0.9),
                (true, _) => rng.gen_range(0.04..0.25),
            };
            let width = if scratch {
                rng.gen_range(0.6..1.8)
            } else {
                rng.gen_range(1.0..4.0)
            } * cell_scale;
            plate
                .strands
                .push((Strand { points, width, amp }, rng.gen_bool(0.7)));
        }
    }
    if rng.gen_bool(0.2) {
        let angle: f32 = rng.gen_range(0.0..TAU);
        let radius = rng.gen_range(1.5..4.0) * w.max(h);
        let edge = rng.gen_range(0.3..0.6) * w.min(h);
        plate.well = Some(WellEdge {
            cx: w / 2.0 + (edge - radius) * angle.cos(),
            cy: h / 2.0 + (edge - radius) * angle.sin(),
            radius,
            band: rng.gen_range(4.0..25.0) * scale,
            band_depth: rng.gen_range(0.3..0.8),
            meniscus: rng.gen_range(40.0..250.0) * scale,
            meniscus_depth: rng.gen_range(0.15..0.6),
            outside: rng.gen_range(0.2..0.7),
        });
    }
    plate.jpeg_quality = rng.gen_bool(0.35).then(|| rng.gen_range(35..=92));
    plate
}

/// Adds every v2 object's signal to `signal` (`width` pixels per row); `scratch` is a buffer of the same length.
pub(crate) fn draw(
    plate: &Plate,
    signal: &mut [f32],
    scratch: &mut [f32],
    width: usize,
    bright: bool,
) {
    let height = signal.len() / width.max(1);
    let mut layer = vec![0.0f32; signal.len()];
    let mut any_blurred = false;
    for &(d, focus) in &plate.dots {
        any_blurred |= !focus;
        stamp_dot(
            &d,
            if focus { signal } else { &mut layer },
            width,
            height,
            bright,
        );
    }
    for &(b, focus) in &plate.bubbles {
        any_blurred |= !focus;
        stamp_bubble(&b, if focus { signal } else { &mut layer }, width, height);
    }
    for (s, focus) in &plate.strands {
        any_blurred |= !focus;
        stamp_strand(s, if *focus { signal } else { &mut layer }, width, height);
    }
    if any_blurred {
        gaussian_blur(&mut layer, scratch, width, plate.defocus);
        signal.par_iter_mut().zip(&layer).for_each(|(s, l)| *s += l);
    }
}

/// Multiplies the formed intensity by the well-edge shading, if any.
pub(crate) fn shade(plate: &Plate, intensity: &mut [f32], width: usize) {
    let Some(well) = plate.well else { return };
    intensity
        .par_chunks_mut(width)
        .enumerate()
        .for_each(|(y, row)| {
            for (x, v) in row.iter_mut().enumerate() {
                *v *= well.factor(x as f32, y as f32);
            }
        });
}

/// Pixel box `[x0, x1) x [y0, y1)` around `(cx, cy)` with half-size `r`, clipped to the image.
fn bounds(cx: f32, cy: f32, r: f32, width: usize, height: usize) -> (usize, usize, usize, usize) {
    let clip = |v: f32, max: usize| (v.max(0.0) as usize).min(max);
    (
        clip(cx - r, width),
        clip(cx + r + 1.0, width),
        clip(cy - r, height),
        clip(cy + r + 1.0, height),
    )
}

fn stamp_dot(d: &Dot, buf: &mut [f32], width: usize, height: usize, bright: bool) {
    let (x0, x1, y0, y1) = bounds(d.x, d.y, d.radius + 2.0, width, height);
    for y in y0..y1 {
        for x in x0..x1 {
            let r = ((x as f32 - d.x).powi(2) + (y as f32 - d.y).powi(2)).sqrt() / d.radius;
            let v = if bright {
                (-2.0 * r * r).exp()
            } else {
                let disc = smoothstep(1.15, 0.85, r);
                let rim = (-((r - 0.9) / 0.18).powi(2)).exp();
                disc * 0.6 + rim - d.centre * (-(r / 0.35).powi(2)).exp()
            };
            buf[y * width + x] += d.amp * v;
        }
    }
}

fn stamp_bubble(b: &Bubble, buf: &mut [f32], width: usize, height: usize) {
    let (x0, x1, y0, y1) = bounds(b.x, b.y, b.radius + 3.0, width, height);
    for y in y0..y1 {
        for x in x0..x1 {
            let d = ((x as f32 - b.x).powi(2) + (y as f32 - b.y).powi(2)).sqrt();
            let inner = smoothstep(
                b.radius - b.rim_width + 1.0,
                b.radius - b.rim_width - 1.0,
                d,
            );
            let rim = (-((d - b.radius + 0.5 * b.rim_width) / (0.5 * b.rim_width)).powi(2)).exp();
            buf[y * width + x] += b.inner * inner + b.rim * rim;
        }
    }
}

/// Rasterises a strand as the per-pixel maximum of its segments' Gaussian cross-sections.
fn stamp_strand(s: &Strand, buf: &mut [f32], width: usize, height: usize) {
    let reach = s.width * 2.5 + 2.0;
    let mut local: std::collections::HashMap<usize, f32> = std::collections::HashMap::new();
    for pair in s.points.windows(2) {
        let ((ax, ay), (bx, by)) = (pair[0], pair[1]);
        let (dx, dy) = (bx - ax, by - ay);
        let len2 = (dx * dx + dy * dy).max(f32::EPSILON);
        let (x0, x1, y0, y1) = bounds((ax + bx) / 2.0, (ay + by) / 2.0, reach, width, height);
        for y in y0..y1 {
            for x in x0..x1 {
                let (px, py) = (x as f32 - ax, y as f32 - ay);
                let t = ((px * dx + py * dy) / len2).clamp(0.0, 1.0);
                let d2 = (px - t * dx).powi(2) + (py - t * dy).powi(2);
                let v = (-d2 / (s.width * s.width)).exp();
                let slot = local.entry(y * width + x).or_insert(0.0);
                *slot = slot.max(v);
            }
        }
    }
    for (i, v) in local {
        buf[i] += s.amp * v;
    }
}
