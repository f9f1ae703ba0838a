//! Position-hashed randomness: per-pixel values that depend only on (stream, x, y), never on a shared RNG, so a
//! render is the same whatever the traversal order or thread count.

/// A 64-bit finaliser (Moremur variant of SplitMix64).
pub(super) fn mix(mut z: u64) -> u64 {
    z ^= z >> 27;
    z = z.wrapping_mul(0x3C79_AC49_2BA7_B653);
    z ^= z >> 33;
    z = z.wrapping_mul(0x1C69_B3F7_4AC4_AE35);
    z ^ (z >> 27)
}

/// Hash of an integer lattice point in a stream.
pub(super) fn hash2(stream: u64, x: i64, y: i64) -> u64 {
    mix(stream ^ mix((x as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (y as u64).rotate_left(32)))
}

/// Uniform in [0, 1) from the top 24 bits of a hash.
pub(super) fn unit(h: u64) -> f32 {
    (h >> 40) as f32 * (1.0 / 16_777_216.0)
}

/// Approximately standard normal value for a lattice point (Irwin-Hall sum of four 16-bit uniforms).
pub(super) fn gauss(stream: u64, x: i64, y: i64) -> f32 {
    let h = hash2(stream, x, y);
    let s: u32 = (0..4).map(|i| ((h >> (16 * i)) & 0xFFFF) as u32).sum();
    (s as f32 / 65_536.0 - 2.0) * 1.732_050_8
}

fn smooth(t: f32) -> f32 {
    t * t * (3.0 - 2.0 * t)
}

/// Smooth lattice value noise in [-1, 1] with features about `cell` pixels across, on a lattice rotated by
/// about 37° so that it does not line up with the pixel grid.
pub(super) fn value(stream: u64, x: f32, y: f32, cell: f32) -> f32 {
    let (fx, fy) = ((0.8 * x - 0.6 * y) / cell, (0.6 * x + 0.8 * y) / cell);
    let (ix, iy) = (fx.floor(), fy.floor());
    let (tx, ty) = (smooth(fx - ix), smooth(fy - iy));
    let (ix, iy) = (ix as i64, iy as i64);
    let v = |dx: i64, dy: i64| unit(hash2(stream, ix + dx, iy + dy)) * 2.0 - 1.0;
    let top = v(0, 0) + (v(1, 0) - v(0, 0)) * tx;
    let bottom = v(0, 1) + (v(1, 1) - v(0, 1)) * tx;
    top + (bottom - top) * ty
}

/// Two octaves of value noise, in about [-1, 1].
pub(super) fn fbm2(stream: u64, x: f32, y: f32, cell: f32) -> f32 {
    0.67 * value(stream, x, y, cell) + 0.33 * value(stream ^ 0x55, x, y, cell * 0.45)
}

/// Cellular (Worley) noise with one jittered feature point per lattice cell `cell` pixels wide: returns the
/// distances to the nearest and second-nearest points (in cell units) and a hash identifying the nearest cell.
pub(super) fn worley(stream: u64, x: f32, y: f32, cell: f32) -> (f32, f32, u64) {
    let (fx, fy) = (x / cell, y / cell);
    let (ix, iy) = (fx.floor() as i64, fy.floor() as i64);
    let (mut f1, mut f2, mut id) = (f32::MAX, f32::MAX, 0u64);
    for dy in -1..=1 {
        for dx in -1..=1 {
            let h = hash2(stream, ix + dx, iy + dy);
            let px = (ix + dx) as f32 + 0.1 + 0.8 * unit(h);
            let py = (iy + dy) as f32 + 0.1 + 0.8 * unit(h.rotate_left(24));
            let d2 = (px - fx) * (px - fx) + (py - fy) * (py - fy);
            if d2 < f1 {
                f2 = f1;
                f1 = d2;
                id = h;
            } else if d2 < f2 {
                f2 = d2;
            }
        }
    }
    (f1.sqrt(), f2.sqrt(), id)
}

/// Hermite step from 0 at `e0` to 1 at `e1` (either order).
pub(super) fn step(e0: f32, e1: f32, x: f32) -> f32 {
    smooth(((x - e0) / (e1 - e0)).clamp(0.0, 1.0))
}
