//! Optics and camera: defocus, out-of-focus glow, the illumination field, sensor noise, quantisation and JPEG.

use image::{DynamicImage, GrayImage, ImageBuffer, Luma, RgbImage};

use super::instrument::{Light, Meniscus, Output};
use super::noise;
use super::paint::Canvas;
use super::scene::Scene;

/// Separable running-sum box filter of radius `r` along rows, edges clamped.
fn box_rows(buf: &mut [f32], w: usize, r: usize, line: &mut Vec<f32>) {
    for row in buf.chunks_mut(w) {
        line.clear();
        line.extend_from_slice(row);
        let at = |i: isize| line[i.clamp(0, w as isize - 1) as usize];
        let mut sum: f32 = (-(r as isize)..=r as isize).map(at).sum();
        let norm = 1.0 / (2 * r + 1) as f32;
        for (x, out) in row.iter_mut().enumerate() {
            *out = sum * norm;
            sum += at(x as isize + r as isize + 1) - at(x as isize - r as isize);
        }
    }
}

/// The same filter along columns, one row of running sums at a time.
fn box_cols(buf: &mut [f32], w: usize, h: usize, r: usize) {
    let src = buf.to_vec();
    let row = |y: isize| &src[y.clamp(0, h as isize - 1) as usize * w..][..w];
    let mut sum = vec![0.0f32; w];
    for y in -(r as isize)..=r as isize {
        sum.iter_mut().zip(row(y)).for_each(|(s, v)| *s += v);
    }
    let norm = 1.0 / (2 * r + 1) as f32;
    for y in 0..h {
        let out = &mut buf[y * w..][..w];
        out.iter_mut().zip(&sum).for_each(|(o, s)| *o = s * norm);
        let (add, sub) = (
            row(y as isize + r as isize + 1),
            row(y as isize - r as isize),
        );
        for ((s, a), b) in sum.iter_mut().zip(add).zip(sub) {
            *s += a - b;
        }
    }
}

/// Gaussian blur of standard deviation `sigma` px, as three box passes.
pub(super) fn blur(buf: &mut [f32], w: usize, h: usize, sigma: f32) {
    let r = (((12.0 * sigma * sigma / 3.0 + 1.0).sqrt() - 1.0) / 2.0).round() as usize;
    if r == 0 {
        return;
    }
    let mut line = Vec::with_capacity(w);
    for _ in 0..3 {
        box_rows(buf, w, r, &mut line);
        box_cols(buf, w, h, r);
    }
}

/// Relative illumination at (x, y) before normalisation.
fn field(l: &Light, w: f32, h: f32, x: f32, y: f32) -> f32 {
    let (nx, ny) = (x / w - 0.5, y / h - 0.5);
    let grad = 1.0 + 2.0 * (l.gradient.0 * nx + l.gradient.1 * ny);
    let vig = 1.0 - l.vignette * 2.0 * (nx * nx + ny * ny);
    let (hx, hy, hs, ha) = l.hotspot;
    let hot = 1.0 + ha * (-((x / w - hx).powi(2) + (y / h - hy).powi(2)) / (2.0 * hs * hs)).exp();
    let men = match l.meniscus {
        None => 1.0,
        Some(Meniscus::Arc {
            cx,
            cy,
            r,
            band,
            dark,
        }) => {
            let inside = r - (x - cx).hypot(y - cy);
            1.0 - dark
                * if inside < 0.0 {
                    1.0
                } else {
                    (-(inside / band).powi(2)).exp()
                }
        }
        Some(Meniscus::Side {
            nx: ux,
            ny: uy,
            width,
            dark,
        }) => {
            let from = if ux + uy > 0.0 {
                ux * x + uy * y
            } else {
                ux * (x - w) + uy * (y - h)
            };
            1.0 - dark * (-from / width).exp()
        }
    };
    (grad * vig * hot * men).max(0.05)
}

/// The illumination field's maximum and its relative spread (max - min) / max, on a coarse grid.
pub(super) fn field_range(l: &Light, w: f32, h: f32) -> (f32, f32) {
    let (mut lo, mut hi) = (f32::MAX, 0.0f32);
    for j in 0..=24 {
        for i in 0..=24 {
            let v = field(l, w, h, w * i as f32 / 24.0, h * j as f32 / 24.0);
            (lo, hi) = (lo.min(v), hi.max(v));
        }
    }
    (hi, (hi - lo) / hi)
}

/// Forms the camera image of a painted specimen.
pub(super) fn develop(scene: &Scene, mut canvas: Canvas) -> DynamicImage {
    let (w, h, cam, light) = (canvas.w, canvas.h, &scene.camera, &scene.light);
    if cam.glow > 0.0 && !canvas.bf {
        let mut glow = canvas.value.clone();
        blur(&mut glow, w, h, cam.glow_sigma);
        canvas
            .value
            .iter_mut()
            .zip(&glow)
            .for_each(|(v, g)| *v += cam.glow * g);
    }
    blur(&mut canvas.value, w, h, cam.blur);
    let (peak, _) = field_range(light, w as f32, h as f32);
    let channels = match cam.output {
        Output::Rgb8(tint) => tint.to_vec(),
        _ => vec![1.0],
    };
    let s = scene.stream;
    let rows: Vec<f32> = (0..h)
        .map(|y| cam.row * noise::gauss(s ^ 0xA1, 0, y as i64))
        .collect();
    let mut out = vec![0.0f32; w * h * channels.len()];
    for (y, row_offset) in rows.iter().enumerate() {
        for x in 0..w {
            let i = y * w + x;
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            let rel = field(light, w as f32, h as f32, fx, fy) / peak;
            let signal = if canvas.bf {
                light.base * rel * canvas.value[i]
            } else {
                light.background * (0.6 + 0.4 * rel) + light.base * rel * canvas.value[i]
            };
            let (xi, yi) = (x as i64, y as i64);
            let gain = 1.0 + cam.prnu * noise::gauss(s ^ 0xB2, xi, yi);
            let hot = noise::unit(noise::hash2(s ^ 0xC3, xi, yi)) < cam.hot;
            for (c, tint) in channels.iter().enumerate() {
                let e = (signal * tint).max(0.0) * gain * cam.full_well;
                let sd = (e + cam.read * cam.read).sqrt();
                let mut v = (e + sd * noise::gauss(s ^ (0xD4 + c as u64), xi, yi)) / cam.full_well
                    + row_offset;
                if hot {
                    v += 0.6;
                }
                out[i * channels.len() + c] = v.clamp(0.0, 1.0).powf(cam.gamma);
            }
        }
    }
    let q8 = |v: &f32| (v * 255.0).round() as u8;
    let image = match cam.output {
        Output::Grey8 => GrayImage::from_raw(w as u32, h as u32, out.iter().map(q8).collect())
            .map(DynamicImage::ImageLuma8),
        Output::Rgb8(_) => RgbImage::from_raw(w as u32, h as u32, out.iter().map(q8).collect())
            .map(DynamicImage::ImageRgb8),
        Output::Grey16(bits) => {
            let full = ((1u32 << bits) - 1) as f32;
            let data = out.iter().map(|v| (v * full).round() as u16).collect();
            ImageBuffer::<Luma<u16>, Vec<u16>>::from_raw(w as u32, h as u32, data)
                .map(DynamicImage::ImageLuma16)
        }
    };
    let image = image.unwrap_or_else(|| DynamicImage::new_luma8(w as u32, h as u32));
    match cam.jpeg {
        Some(quality) => jpeg(image, quality),
        None => image,
    }
}

/// Round-trips an 8-bit image through JPEG at `quality`; keeps the original if encoding fails.
fn jpeg(image: DynamicImage, quality: u8) -> DynamicImage {
    let mut bytes = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality);
    if image.write_with_encoder(encoder).is_err() {
        return image;
    }
    match image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg) {
        Ok(decoded) if decoded.color() == image.color() => decoded,
        _ => image,
    }
}
