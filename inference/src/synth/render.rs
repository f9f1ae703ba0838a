//! Rendering a planned [`Scene`] into an image and its mask.
//!
//! Passes, each row-parallel except the clutter stamps: spheroid signal, halo and mask; clutter; image formation
//! (Beer-Lambert transmission or additive emission under the light field); Gaussian defocus; Poisson-Gaussian
//! noise and quantisation. Every random number in these passes is a hash of the pixel position, so the output
//! does not depend on how rayon splits the rows.

use image::{DynamicImage, GrayImage, ImageBuffer, Luma, RgbImage};
use rayon::prelude::*;

use super::clutter;
use super::look::Depth;
use super::noise::{gauss_from_bits, pixel_bits, smoothstep};
use super::optics::gaussian_blur;
use super::plate;
use super::scene::Scene;
use super::{Modality, SampleTags, SynthSample};

/// Renders `scene` into a sample.
pub(crate) fn render(scene: &Scene) -> SynthSample {
    let (w, h) = (scene.width as usize, scene.height as usize);
    let mut signal = vec![0.0f32; w * h];
    let mut halo = vec![0.0f32; w * h];
    let mut mask = GrayImage::new(scene.width, scene.height);
    draw_bodies(scene, &mut signal, &mut halo, &mut mask);
    let bright = scene.modality == Modality::Fluorescence;
    clutter::draw(&scene.clutter, &mut signal, w, bright, &scene.textures);
    if let Some(plate) = &scene.plate {
        let mut scratch = vec![0.0f32; w * h];
        plate::draw(plate, &mut signal, &mut scratch, w, bright);
    }
    form_image(scene, &mut signal, &halo);
    if let Some(plate) = &scene.plate {
        plate::shade(plate, &mut signal, w);
    }
    gaussian_blur(&mut signal, &mut halo, w, scene.optics.blur);
    let mut image = quantize(scene, &signal);
    if let Some(quality) = scene.plate.as_ref().and_then(|p| p.jpeg_quality) {
        image = jpeg_round_trip(image, quality);
    }
    let (cell_cloud, bubble, fibre) = scene
        .plate
        .as_ref()
        .map_or((false, false, false), |p| p.tags());
    let d = &scene.difficulty;
    let tags = SampleTags {
        modality: scene.modality,
        bit_depth: match scene.depth {
            Depth::Gray16 { bits, .. } => bits,
            Depth::Gray8 | Depth::Rgb8(_) => 8,
        },
        uneven_illumination: d.uneven,
        halo: d.halo,
        debris: d.debris,
        touching: d.touching,
        cut_by_frame: touches_border(&mask),
        spheroids: scene.bodies.len(),
        cell_cloud,
        bubble,
        fibre,
    };
    SynthSample { image, mask, tags }
}

/// Compresses an 8-bit image as JPEG at `quality` and decodes it again; other formats pass through.
fn jpeg_round_trip(image: DynamicImage, quality: u8) -> DynamicImage {
    if !matches!(
        image,
        DynamicImage::ImageLuma8(_) | DynamicImage::ImageRgb8(_)
    ) {
        return image;
    }
    let mut bytes = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality);
    match image
        .write_with_encoder(encoder)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg)
                .map_err(|e| e.to_string())
        }) {
        Ok(decoded) => decoded,
        Err(error) => {
            tracing::warn!(%error, "synthetic JPEG round trip failed; keeping the lossless image");
            image
        }
    }
}

/// Spheroid signal (maximum over bodies), halo outside all bodies, and the 0/255 mask.
fn draw_bodies(scene: &Scene, signal: &mut [f32], halo: &mut [f32], mask: &mut [u8]) {
    let w = scene.width as usize;
    let reach = scene.halo.map_or(1.5, |h| h.reach().max(1.5));
    let tex = &scene.textures;
    signal
        .par_chunks_mut(w)
        .zip(halo.par_chunks_mut(w))
        .zip(mask.par_chunks_mut(w))
        .enumerate()
        .for_each(|(y, ((sig, hal), msk))| {
            let yf = y as f32;
            let mut cover = vec![0.0f32; if scene.halo.is_some() { w } else { 0 }];
            let (mut coarse, mut fine) = (vec![0.0f32; w], vec![0.0f32; w]);
            for body in &scene.bodies {
                let o = &body.outline;
                let outer = o.r_max + reach;
                let dy = yf - o.cy;
                if dy.abs() > outer {
                    continue;
                }
                let half = (outer * outer - dy * dy).sqrt();
                let x0 = (o.cx - half).floor().clamp(0.0, w as f32) as usize;
                let x1 = ((o.cx + half).ceil() + 1.0).clamp(0.0, w as f32) as usize;
                if x0 >= x1 {
                    continue;
                }
                // Texture only where this row can be inside the body or its halo.
                let textured = if scene.halo.is_some() {
                    outer
                } else {
                    o.r_max + 1.0
                };
                let solid = if dy.abs() < textured {
                    let half = (textured.powi(2) - dy * dy).sqrt();
                    let lo = (o.cx - half).floor().clamp(x0 as f32, x1 as f32) as usize;
                    let hi = ((o.cx + half).ceil() + 1.0).clamp(lo as f32, x1 as f32) as usize;
                    tex.coarse.fill_row(yf, lo as f32, &mut coarse[lo..hi]);
                    tex.fine.fill_row(yf, lo as f32, &mut fine[lo..hi]);
                    lo..hi
                } else {
                    0..0
                };
                for x in x0..x1 {
                    let (s, rho, envelope) = if scene.halo.is_some() {
                        o.locate_with_envelope(x as f32, yf)
                    } else {
                        let (s, rho) = o.locate(x as f32, yf);
                        (s, rho, s)
                    };
                    let inside = solid.contains(&x);
                    if s < 0.7 && inside {
                        let cov = smoothstep(0.7, -0.7, s);
                        sig[x] = sig[x].max(cov * body.signal(s, rho, coarse[x], fine[x]));
                        if s < 0.0 {
                            msk[x] = 255;
                        }
                        if let Some(c) = cover.get_mut(x) {
                            *c = c.max(cov);
                        }
                    }
                    if let (Some(ring), true) = (scene.halo, inside) {
                        // The halo brightness wanders along the boundary, as a real phase halo does.
                        hal[x] = hal[x].max(ring.at(envelope) * (1.0 + 0.6 * coarse[x]));
                    }
                }
            }
            // A halo never shows on top of a neighbouring spheroid.
            for (v, c) in hal.iter_mut().zip(&cover) {
                *v *= 1.0 - c;
            }
        });
}

/// Turns signal and halo into light intensity in place.
fn form_image(scene: &Scene, signal: &mut [f32], halo: &[f32]) {
    let w = scene.width as usize;
    let optics = &scene.optics;
    let bright = scene.modality == Modality::Fluorescence;
    signal
        .par_chunks_mut(w)
        .zip(halo.par_chunks(w))
        .enumerate()
        .for_each(|(y, (sig, hal))| {
            let yf = y as f32;
            let (mut light, mut mottle) = (vec![0.0f32; w], vec![0.0f32; w]);
            scene.light.fill_row(yf, &mut light);
            scene.textures.background.fill_row(yf, 0.0, &mut mottle);
            for (((v, h), l), m) in sig.iter_mut().zip(hal).zip(&light).zip(&mottle) {
                let m = 1.0 + optics.mottle * m;
                *v = if bright {
                    // Autofluorescence follows the excitation only partly; haze and emission follow it fully.
                    optics.background * m * (0.5 + 0.5 * l) + l * (optics.haze * m + *v + h)
                } else {
                    optics.background * l * m * ((-*v).exp() + h)
                };
            }
        });
}

/// Adds camera noise and stores the intensity in the scene's format.
fn quantize(scene: &Scene, intensity: &[f32]) -> DynamicImage {
    let (w, h) = (scene.width, scene.height);
    let optics = &scene.optics;
    let row_len = w as usize;
    // Noise for pixel `x` of row `y` with clean intensity `v`, clamped to [0, 1].
    let noisy = |x: usize, y: usize, v: f32| {
        let bits = pixel_bits(optics.stream, x as u32, y as u32);
        let sigma = (optics.read_noise * optics.read_noise + optics.shot_noise * v.max(0.0)).sqrt();
        (v + sigma * gauss_from_bits(bits)).clamp(0.0, 1.0)
    };
    let rows = intensity.par_chunks(row_len).enumerate();
    match scene.depth {
        Depth::Gray8 => {
            let mut img = GrayImage::new(w, h);
            img.par_chunks_mut(row_len)
                .zip(rows)
                .for_each(|(out, (y, row))| {
                    for (x, (o, v)) in out.iter_mut().zip(row).enumerate() {
                        *o = (noisy(x, y, *v) * 255.0 + 0.5) as u8;
                    }
                });
            DynamicImage::ImageLuma8(img)
        }
        Depth::Rgb8(gain) => {
            let mut img = RgbImage::new(w, h);
            img.par_chunks_mut(row_len * 3)
                .zip(rows)
                .for_each(|(out, (y, row))| {
                    for (x, (o, v)) in out.chunks_exact_mut(3).zip(row).enumerate() {
                        let n = noisy(x, y, *v);
                        for (c, g) in o.iter_mut().zip(gain) {
                            *c = (n * g * 255.0 + 0.5) as u8;
                        }
                    }
                });
            DynamicImage::ImageRgb8(img)
        }
        Depth::Gray16 { bits, offset, span } => {
            let max_code = ((1u32 << bits) - 1) as f32;
            let mut img: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::new(w, h);
            img.par_chunks_mut(row_len)
                .zip(rows)
                .for_each(|(out, (y, row))| {
                    for (x, (o, v)) in out.iter_mut().zip(row).enumerate() {
                        *o = ((offset + noisy(x, y, *v) * span) * max_code + 0.5) as u16;
                    }
                });
            DynamicImage::ImageLuma16(img)
        }
    }
}

/// Whether any mask pixel on the outermost rows or columns is set.
fn touches_border(mask: &GrayImage) -> bool {
    let (w, h) = mask.dimensions();
    let edge_rows =
        (0..w).any(|x| mask.get_pixel(x, 0)[0] != 0 || mask.get_pixel(x, h - 1)[0] != 0);
    edge_rows || (0..h).any(|y| mask.get_pixel(0, y)[0] != 0 || mask.get_pixel(w - 1, y)[0] != 0)
}
