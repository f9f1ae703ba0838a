//! A picture a person can check at a glance: the polygons' fill (35 % of the
//! polygon colour; holes left clear) and a 2-px outline in full colour over
//! the original image.

use image::{Rgb, RgbImage};

use crate::postprocess::{Polygon, PolygonType};

/// Weight of the polygon colour in the fill.
const FILL_ALPHA: f32 = 0.35;

fn parse_color(hex: &str) -> Rgb<u8> {
    let h = hex.trim_start_matches('#');
    let c = |i: usize| {
        h.get(i..i + 2)
            .and_then(|s| u8::from_str_radix(s, 16).ok())
            .unwrap_or(255)
    };
    Rgb([c(0), c(2), c(4)])
}

/// Draws `polygons` (with the `mask` they rasterise to) over `image`.
pub fn render_overlay(
    image: &RgbImage,
    mask: &crate::postprocess::Mask,
    polygons: &[Polygon],
) -> RgbImage {
    let mut out = image.clone();
    let (w, h) = out.dimensions();
    // Fill: each foreground pixel takes the colour of the first external.
    let fill = polygons
        .iter()
        .find(|p| p.kind == PolygonType::External)
        .map(|p| parse_color(&p.color))
        .unwrap_or(Rgb([255, 87, 51]));
    if mask.width() == w && mask.height() == h {
        for (x, y, px) in out.enumerate_pixels_mut() {
            if mask.get(x, y) {
                for c in 0..3 {
                    px[c] = (px[c] as f32 * (1.0 - FILL_ALPHA) + fill[c] as f32 * FILL_ALPHA) as u8;
                }
            }
        }
    }
    for poly in polygons {
        let color = parse_color(&poly.color);
        for p in &poly.points {
            for dy in 0..2 {
                for dx in 0..2 {
                    let (x, y) = (p.x + dx, p.y + dy);
                    if x >= 0 && y >= 0 && (x as u32) < w && (y as u32) < h {
                        out.put_pixel(x as u32, y as u32, color);
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postprocess::{extract_polygons, Mask, PolygonOptions};
    use rand::SeedableRng;

    #[test]
    fn outline_is_drawn_and_background_untouched() {
        let mut mask = Mask::new(40, 40);
        for y in 10..30 {
            for x in 10..30 {
                mask.set(x, y, true);
            }
        }
        let polys = extract_polygons(
            &mask,
            &PolygonOptions::default(),
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(1),
        );
        let img = RgbImage::from_pixel(40, 40, Rgb([100, 100, 100]));
        let out = render_overlay(&img, &mask, &polys);
        assert_eq!(*out.get_pixel(10, 10), parse_color(&polys[0].color));
        assert_eq!(*out.get_pixel(2, 2), Rgb([100, 100, 100]));
        assert_ne!(*out.get_pixel(20, 20), Rgb([100, 100, 100]));
    }
}
