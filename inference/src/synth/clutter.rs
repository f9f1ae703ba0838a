//! Things in the field that are not spheroids: loose and shed cells, cell clumps, irregular fragments and
//! fibres. They are drawn into the signal but never into the mask, so a model has to learn shape and texture
//! rather than "anything dark" (or "anything bright" in fluorescence).
//!
//! Objects are stamped serially after the parallel spheroid pass; stamping is a few thousand pixels per object.

use std::f32::consts::TAU;

use rand::Rng;

use super::look::{Body, Textures};
use super::noise::smoothstep;
use super::shape::{Outline, OutlineStyle};
use super::Modality;

/// A single round cell: centre, radius, strength and how refractile (bright-centred) it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cell {
    x: f32,
    y: f32,
    radius: f32,
    amp: f32,
    /// Weight of the uniform fill relative to the membrane ring.
    fill: f32,
    /// Membrane ring width as a fraction of the radius; wide rings read as slightly out of focus.
    ring: f32,
    refractile: f32,
}

/// An irregular non-spheroid fragment.
#[derive(Debug, Clone)]
pub(crate) struct Fragment {
    outline: Outline,
    amp: f32,
}

/// A thin curved fibre given as a polyline.
#[derive(Debug, Clone)]
pub(crate) struct Fibre {
    points: Vec<(f32, f32)>,
    width: f32,
    amp: f32,
}

/// All non-spheroid objects of a scene.
#[derive(Debug, Clone, Default)]
pub(crate) struct Clutter {
    cells: Vec<Cell>,
    fragments: Vec<Fragment>,
    fibres: Vec<Fibre>,
}

/// Plans a few tiny cells for clean scenes, or many cells, clumps, fragments and fibres when `debris`.
pub(crate) fn plan<R: Rng>(
    rng: &mut R,
    modality: Modality,
    bodies: &[Body],
    debris: bool,
    width: u32,
    height: u32,
    scale: f32,
) -> Clutter {
    let (w, h) = (width as f32, height as f32);
    let bright = modality == Modality::Fluorescence;
    let mut clutter = Clutter::default();
    let inside = |x: f32, y: f32| bodies.iter().any(|b| b.outline.contains(x, y, 1.0));
    let cell = |rng: &mut R, x: f32, y: f32, radius: f32| Cell {
        x,
        y,
        radius,
        amp: if bright {
            rng.gen_range(0.2..1.0)
        } else {
            rng.gen_range(0.25..0.8)
        },
        fill: rng.gen_range(0.2..1.5),
        ring: rng.gen_range(0.15..0.5),
        refractile: if bright { 0.0 } else { rng.gen_range(0.0..0.8) },
    };
    let loose = if debris {
        rng.gen_range(25..120)
    } else {
        rng.gen_range(0..8)
    };
    for _ in 0..loose {
        let radius = if debris {
            rng.gen_range(2.5..12.0)
        } else {
            rng.gen_range(2.0..5.0)
        } * scale.max(0.5);
        let (x, y) = if debris && !bodies.is_empty() && rng.gen_bool(0.35) {
            // Shed cells sit just outside a spheroid.
            let body = &bodies[rng.gen_range(0..bodies.len())].outline;
            let angle: f32 = rng.gen_range(0.0..TAU);
            let (dx, dy) = (angle.cos(), angle.sin());
            let d = body.radius_towards(dx, dy) + radius + rng.gen_range(0.0..40.0) * scale;
            (body.cx + dx * d, body.cy + dy * d)
        } else {
            (rng.gen_range(0.0..w), rng.gen_range(0.0..h))
        };
        if !inside(x, y) {
            let c = cell(rng, x, y, radius);
            clutter.cells.push(c);
        }
    }
    if !debris {
        return clutter;
    }
    for _ in 0..rng.gen_range(0..=3) {
        let (cx, cy) = (rng.gen_range(0.0..w), rng.gen_range(0.0..h));
        let spread = rng.gen_range(12.0..35.0) * scale;
        for _ in 0..rng.gen_range(5..20) {
            let (x, y) = (
                cx + rng.gen_range(-spread..spread),
                cy + rng.gen_range(-spread..spread),
            );
            let radius = rng.gen_range(4.0..10.0) * scale.max(0.5);
            if !inside(x, y) {
                let c = cell(rng, x, y, radius);
                clutter.cells.push(c);
            }
        }
    }
    let style = OutlineStyle {
        lobes: 0.35,
        roughness: 0.02,
        bump_radius: 0.0,
    };
    for _ in 0..rng.gen_range(1..=5) {
        let radius = rng.gen_range(8.0..45.0) * scale;
        let (x, y) = (rng.gen_range(0.0..w), rng.gen_range(0.0..h));
        if !inside(x, y) {
            let outline = Outline::random(rng, x, y, radius, style);
            let amp = if bright {
                rng.gen_range(0.1..0.5)
            } else {
                rng.gen_range(0.2..0.8)
            };
            clutter.fragments.push(Fragment { outline, amp });
        }
    }
    for _ in 0..rng.gen_range(0..=4) {
        let (mut x, mut y) = (rng.gen_range(0.0..w), rng.gen_range(0.0..h));
        let mut heading: f32 = rng.gen_range(0.0..TAU);
        let steps = (rng.gen_range(80.0..400.0) * scale / 3.0) as usize;
        let mut points = Vec::with_capacity(steps + 1);
        points.push((x, y));
        for _ in 0..steps {
            heading += rng.gen_range(-0.2..0.2);
            x += 3.0 * heading.cos();
            y += 3.0 * heading.sin();
            points.push((x, y));
        }
        let amp = if bright {
            rng.gen_range(0.05..0.25)
        } else {
            rng.gen_range(0.2..0.6)
        };
        let width = rng.gen_range(0.8..2.5) * scale.max(0.5);
        clutter.fibres.push(Fibre { points, width, amp });
    }
    clutter
}

/// Pixel bounds `[x0, x1) x [y0, y1)` of a box around `(cx, cy)` with half-size `r`, clipped to the image.
fn bounds(cx: f32, cy: f32, r: f32, width: usize, height: usize) -> (usize, usize, usize, usize) {
    let clip = |v: f32, max: usize| (v.max(0.0) as usize).min(max);
    (
        clip(cx - r, width),
        clip(cx + r + 1.0, width),
        clip(cy - r, height),
        clip(cy + r + 1.0, height),
    )
}

/// Adds every object's signal to `buf` (`width` pixels per row).
pub(crate) fn draw(
    clutter: &Clutter,
    buf: &mut [f32],
    width: usize,
    bright: bool,
    textures: &Textures,
) {
    let height = buf.len() / width.max(1);
    for c in &clutter.cells {
        let (x0, x1, y0, y1) = bounds(c.x, c.y, c.radius + 3.0, width, height);
        let ring_w = (c.radius * c.ring).max(0.8);
        for y in y0..y1 {
            for x in x0..x1 {
                let d = ((x as f32 - c.x).powi(2) + (y as f32 - c.y).powi(2)).sqrt();
                let v = if bright {
                    c.amp * (-1.5 * (d / c.radius).powi(2)).exp()
                } else {
                    let fill = smoothstep(c.radius + 0.7, c.radius - 0.7, d);
                    let ring = (-((d - 0.8 * c.radius) / ring_w).powi(2)).exp();
                    let centre = (-(d / (0.35 * c.radius)).powi(2)).exp();
                    c.amp * (c.fill * fill + ring - c.refractile * centre)
                };
                buf[y * width + x] += v;
            }
        }
    }
    for f in &clutter.fragments {
        let o = &f.outline;
        let (x0, x1, y0, y1) = bounds(o.cx, o.cy, o.r_max + 3.0, width, height);
        for y in y0..y1 {
            for x in x0..x1 {
                let (s, _) = o.locate(x as f32, y as f32);
                let cover = smoothstep(0.7, -0.7, s);
                let edge = (-(s / 1.5).powi(2)).exp() * if bright { 0.0 } else { 0.5 };
                let grain = 1.0 + 0.4 * textures.fine.sample(x as f32, y as f32);
                buf[y * width + x] += f.amp * (cover * grain + edge);
            }
        }
    }
    for f in &clutter.fibres {
        draw_fibre(f, buf, width, height);
    }
}

/// Rasterises a fibre as the maximum of per-segment Gaussian cross-sections, so joints are not darker.
fn draw_fibre(f: &Fibre, buf: &mut [f32], width: usize, height: usize) {
    let reach = f.width * 2.5;
    let (mut lo_x, mut lo_y, mut hi_x, mut hi_y) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for &(x, y) in &f.points {
        (lo_x, lo_y, hi_x, hi_y) = (lo_x.min(x), lo_y.min(y), hi_x.max(x), hi_y.max(y));
    }
    let (x0, x1, y0, y1) = bounds(
        (lo_x + hi_x) / 2.0,
        (lo_y + hi_y) / 2.0,
        (hi_x - lo_x).max(hi_y - lo_y) / 2.0 + reach,
        width,
        height,
    );
    if x0 >= x1 || y0 >= y1 {
        return;
    }
    let local_w = x1 - x0;
    let mut local = vec![0.0f32; local_w * (y1 - y0)];
    for pair in f.points.windows(2) {
        let ((ax, ay), (bx, by)) = (pair[0], pair[1]);
        let (dx, dy) = (bx - ax, by - ay);
        let len2 = (dx * dx + dy * dy).max(f32::EPSILON);
        let (sx0, sx1, sy0, sy1) =
            bounds((ax + bx) / 2.0, (ay + by) / 2.0, 2.0 + reach, width, height);
        for y in sy0.max(y0)..sy1.min(y1) {
            for x in sx0.max(x0)..sx1.min(x1) {
                let (px, py) = (x as f32 - ax, y as f32 - ay);
                let t = ((px * dx + py * dy) / len2).clamp(0.0, 1.0);
                let d2 = (px - t * dx).powi(2) + (py - t * dy).powi(2);
                let v = f.amp * (-d2 / (f.width * f.width)).exp();
                let slot = &mut local[(y - y0) * local_w + (x - x0)];
                *slot = slot.max(v);
            }
        }
    }
    for (row, y) in local.chunks(local_w).zip(y0..y1) {
        for (v, o) in row.iter().zip(&mut buf[y * width + x0..y * width + x1]) {
            *o += v;
        }
    }
}
