//! The error type of [`decode_rgb8`](super::decode_rgb8) and [`decode_dynamic`](super::decode_dynamic).

/// Why an uploaded image could not be decoded.
///
/// The size checks ([`Empty`](Self::Empty), [`TooManyBytes`](Self::TooManyBytes),
/// [`ZeroPixels`](Self::ZeroPixels), [`TooManyPixels`](Self::TooManyPixels)) run before any pixel
/// data is decoded. The last three variants carry the codec's own error as their `source`; the
/// `Display` text does not repeat it, so print the whole chain (e.g. `{:#}` with anyhow) to show it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input has no bytes at all.
    #[error("the image is empty (0 bytes)")]
    Empty,
    /// The input is larger than [`DecodeLimits::max_bytes`](super::DecodeLimits::max_bytes).
    #[error("the image is {bytes} bytes, more than the limit of {limit} bytes")]
    TooManyBytes {
        /// Size of the input.
        bytes: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The magic bytes are not those of PNG, JPEG, TIFF or BMP.
    #[error(
        "{} is not supported; send PNG, JPEG, TIFF or BMP",
        .detected.map_or_else(|| "this file format (unrecognised magic bytes)".to_owned(),
            |name| format!("the {name} format"))
    )]
    UnsupportedFormat {
        /// The format recognised from the magic bytes, if it is one we know by name
        /// (e.g. `"GIF"`, `"WebP"`); `None` when the bytes match no known image format.
        detected: Option<&'static str>,
    },
    /// The header declares an image with no pixels.
    #[error(
        "the image header declares {width}x{height} pixels; an image needs at least one pixel"
    )]
    ZeroPixels {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
    },
    /// The header declares more pixels than
    /// [`DecodeLimits::max_pixels`](super::DecodeLimits::max_pixels); nothing was decoded.
    #[error(
        "the image is {width}x{height} = {} pixels, more than the limit of {limit} pixels",
        u64::from(*.width) * u64::from(*.height)
    )]
    TooManyPixels {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// The configured limit.
        limit: u64,
    },
    /// A well-formed file of a supported format that uses a variant this decoder cannot read
    /// (e.g. a palette, YCbCr, 32-bit integer or planar CMYK TIFF).
    #[error("this {format} image uses a feature that is not supported")]
    UnsupportedVariant {
        /// The container format (`"PNG"`, `"JPEG"`, `"TIFF"` or `"BMP"`).
        format: &'static str,
        /// The codec's description of the feature.
        #[source]
        source: image::ImageError,
    },
    /// Decoding would need more memory than the limits allow (the second guard, after
    /// [`TooManyPixels`](Self::TooManyPixels), e.g. for a TIFF with huge strips).
    #[error("decoding this {format} image would need more memory than allowed")]
    LimitExceeded {
        /// The container format.
        format: &'static str,
        /// The codec's limit error.
        #[source]
        source: image::ImageError,
    },
    /// The data is truncated or corrupt.
    #[error("the {format} data is corrupt or truncated")]
    Corrupt {
        /// The container format.
        format: &'static str,
        /// The codec's description of the damage.
        #[source]
        source: image::ImageError,
    },
}

impl DecodeError {
    /// Sorts an `image` error into a variant, with the container `format` it came from.
    pub(super) fn from_image(format: &'static str, source: image::ImageError) -> Self {
        use image::ImageError as E;
        match source {
            E::Limits(_) => Self::LimitExceeded { format, source },
            E::Unsupported(_) => Self::UnsupportedVariant { format, source },
            // Decoding, IoError (truncation shows up as UnexpectedEof), Parameter and anything
            // newer: the bytes are at fault.
            _ => Self::Corrupt { format, source },
        }
    }
}
