//! Binary segmentation mask: one byte per pixel, row-major, values 0 or 1.
//!
//! [`Mask::resize_nearest`] follows OpenCV's `resize(.., INTER_NEAREST)`
//! (`resizeNN` in `modules/imgproc/src/resize.cpp`): the source column of
//! destination column `x` is `min(floor(x * (1.0 / (dst_w / src_w))), src_w - 1)`,
//! evaluated in `f64` exactly as OpenCV does. The exact rational
//! `floor(x * src_w / dst_w)` differs from OpenCV for some size pairs (for
//! example 1024 -> 98 columns), so the floating-point form is kept on purpose.

/// A binary mask of `width * height` pixels stored row-major, each 0 or 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl Mask {
    /// Test helper: a mask drawn as text rows, `#` foreground, anything else background.
    #[cfg(test)]
    pub(crate) fn from_rows(rows: &[&str]) -> Mask {
        let w = rows[0].len() as u32;
        let data = rows
            .iter()
            .flat_map(|r| r.bytes().map(|b| u8::from(b == b'#')))
            .collect();
        Mask::from_vec(w, rows.len() as u32, data).unwrap()
    }

    /// An all-background mask of the given size.
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            data: vec![0; width as usize * height as usize],
        }
    }

    /// Wraps row-major pixel data; any nonzero byte becomes 1.
    ///
    /// Returns `None` when `data.len() != width * height`.
    pub fn from_vec(width: u32, height: u32, mut data: Vec<u8>) -> Option<Self> {
        if data.len() != width as usize * height as usize {
            return None;
        }
        for v in &mut data {
            *v = u8::from(*v != 0);
        }
        Some(Self {
            width,
            height,
            data,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Whether pixel `(x, y)` is foreground; pixels outside the mask are background.
    pub fn get(&self, x: u32, y: u32) -> bool {
        x < self.width && y < self.height && self.data[self.index(x, y)] != 0
    }

    /// Sets pixel `(x, y)`; writes outside the mask are ignored.
    pub fn set(&mut self, x: u32, y: u32, value: bool) {
        if x < self.width && y < self.height {
            let i = self.index(x, y);
            self.data[i] = u8::from(value);
        }
    }

    /// The row-major pixel bytes (each 0 or 1).
    pub fn as_slice(&self) -> &[u8] {
        &self.data
    }

    /// Number of foreground pixels.
    pub fn count_foreground(&self) -> usize {
        self.data.iter().filter(|&&v| v != 0).count()
    }

    /// Nearest-neighbour resize with OpenCV's `INTER_NEAREST` convention
    /// (see the module doc). Resizing to or from an empty size gives an
    /// all-background mask of the requested size.
    pub fn resize_nearest(&self, new_w: u32, new_h: u32) -> Mask {
        let mut out = Mask::new(new_w, new_h);
        if self.width == 0 || self.height == 0 || new_w == 0 || new_h == 0 {
            return out;
        }
        let xs = nearest_offsets(self.width, new_w);
        let ys = nearest_offsets(self.height, new_h);
        let (sw, dw) = (self.width as usize, new_w as usize);
        for (dy, &sy) in ys.iter().enumerate() {
            let src = &self.data[sy * sw..(sy + 1) * sw];
            let dst = &mut out.data[dy * dw..(dy + 1) * dw];
            for (d, &sx) in dst.iter_mut().zip(&xs) {
                *d = src[sx];
            }
        }
        out
    }

    fn index(&self, x: u32, y: u32) -> usize {
        y as usize * self.width as usize + x as usize
    }
}

/// Source index of each destination index, as OpenCV's `resizeNN` computes it.
fn nearest_offsets(src: u32, dst: u32) -> Vec<usize> {
    // OpenCV: inv_scale = dst / src; ifx = 1.0 / inv_scale; sx = floor(x * ifx).
    let inv = 1.0 / (f64::from(dst) / f64::from(src));
    let last = src as usize - 1;
    (0..dst)
        .map(|x| ((f64::from(x) * inv).floor() as usize).min(last))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_vec_checks_length_and_normalises() {
        assert!(Mask::from_vec(2, 2, vec![0; 3]).is_none());
        let m = Mask::from_vec(2, 2, vec![0, 255, 7, 0]).unwrap();
        assert_eq!(m.as_slice(), &[0, 1, 1, 0]);
        assert_eq!(m.count_foreground(), 2);
        assert!(m.get(1, 0) && m.get(0, 1) && !m.get(0, 0));
        assert!(!m.get(5, 0), "outside reads as background");
    }

    #[test]
    fn set_and_get() {
        let mut m = Mask::new(3, 2);
        m.set(2, 1, true);
        m.set(9, 9, true);
        assert_eq!(m.as_slice(), &[0, 0, 0, 0, 0, 1]);
        m.set(2, 1, false);
        assert_eq!(m.count_foreground(), 0);
        assert_eq!((m.width(), m.height()), (3, 2));
    }

    #[test]
    fn resize_matches_opencv_offsets() {
        // Golden values from cv2.resize(.., INTER_NEAREST) (OpenCV 5.0.0):
        // for 1024 -> 98, x = 49 reads source 511 although the exact rational
        // 49 * 1024 / 98 is 512; the f64 form reproduces OpenCV.
        let offs = nearest_offsets(1024, 98);
        assert_eq!(offs[49], 511);
        // 6 -> 34: OpenCV reads source 2 at x = 17, where both
        // floor(17 * 6 / 34) and floor(17 * (6.0 / 34.0)) give 3.
        let want = [
            0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4,
            5, 5, 5, 5, 5,
        ];
        assert_eq!(nearest_offsets(6, 34), want);
        assert_eq!(nearest_offsets(4, 8), vec![0, 0, 1, 1, 2, 2, 3, 3]);
        assert_eq!(nearest_offsets(8, 3), vec![0, 2, 5]);
    }

    #[test]
    fn resize_up_and_down() {
        let m = Mask::from_vec(2, 2, vec![1, 0, 0, 1]).unwrap();
        let up = m.resize_nearest(4, 4);
        let want = [1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1];
        assert_eq!(up.as_slice(), &want);
        assert_eq!(up.resize_nearest(2, 2), m);
        assert_eq!(m.resize_nearest(0, 3), Mask::new(0, 3));
        assert_eq!(Mask::new(0, 0).resize_nearest(2, 1), Mask::new(2, 1));
    }
}
