//! Size limits applied to untrusted image uploads before and while they are decoded.

/// How much input a decode may accept.
///
/// The defaults leave room for any microscope frame SpherosegV4 sees (a few megapixels) while
/// bounding the memory one upload can make a node allocate. They are settings, not rules of the
/// contract: raise them for whole-slide scans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted input, in bytes (checked before anything else is read).
    pub max_bytes: usize,
    /// Largest accepted `width * height`, checked against the header before pixel data is
    /// decoded. The decoded image itself takes up to 8 bytes per pixel (16-bit RGBA).
    pub max_pixels: u64,
}

impl DecodeLimits {
    /// Default [`max_bytes`](Self::max_bytes): 64 MiB, an uncompressed 16-bit RGB frame of
    /// about 11 megapixels.
    pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;
    /// Default [`max_pixels`](Self::max_pixels): 40 megapixels (e.g. 7300 x 5480).
    pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

    /// Widest side the `image` crate may accept: any side beyond `max_pixels` already breaks
    /// the pixel cap (the other side is at least 1).
    pub(super) fn max_side(&self) -> u32 {
        u32::try_from(self.max_pixels).unwrap_or(u32::MAX)
    }

    /// Memory budget handed to the `image` crate as `Limits::max_alloc`: 16 bytes per allowed
    /// pixel, room for the widest output it can produce (RGBA 32-bit float) or for a 16-bit RGBA
    /// output plus as much again of codec scratch space (TIFF strips, PNG rows).
    pub(super) fn max_alloc(&self) -> u64 {
        self.max_pixels.saturating_mul(16)
    }
}

impl Default for DecodeLimits {
    /// 64 MiB and 40 megapixels ([`DEFAULT_MAX_BYTES`](Self::DEFAULT_MAX_BYTES),
    /// [`DEFAULT_MAX_PIXELS`](Self::DEFAULT_MAX_PIXELS)).
    fn default() -> Self {
        Self {
            max_bytes: Self::DEFAULT_MAX_BYTES,
            max_pixels: Self::DEFAULT_MAX_PIXELS,
        }
    }
}
