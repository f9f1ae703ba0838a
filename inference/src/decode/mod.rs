//! Decoding of uploaded images (PNG, JPEG, TIFF, BMP) into the 8-bit RGB the model takes.
//!
//! The format is detected from the magic bytes, never from a file name. Uploads are untrusted,
//! so the checks run cheapest first and before anything large is allocated:
//!
//! 1. the byte count against [`DecodeLimits::max_bytes`];
//! 2. the magic bytes (PNG, JPEG, TIFF/BigTIFF, BMP; anything else is named if known);
//! 3. the width and height declared by the header against [`DecodeLimits::max_pixels`], first
//!    read straight from the bytes (PNG, BMP, JPEG), then as the codec reports them after
//!    parsing only the header (all formats) - a 100-byte PNG claiming 100000x100000 is refused
//!    here, with nothing allocated for its pixels;
//! 4. the `image` crate's own [`image::Limits`] (largest side, allocation budget) as a second
//!    guard while pixels are decoded.
//!
//! An accepted header may still make the codec allocate up to `max_pixels` times the output
//! pixel size before the data turns out to be truncated; that is the bound the limits set.
//!
//! A multi-page TIFF yields its first page. EXIF / TIFF orientation is applied, as OpenCV's `imread` (the old service) and browsers do,
//! so the pixel grid, and the polygons found on it, match what a viewer shows.
//! [`to_rgb8`] then reduces depth and channels (see its docs, and `reduce.rs` for why 16-bit
//! data is stretched rather than truncated).

mod error;
mod limits;
mod reduce;
mod sniff;
#[cfg(test)]
mod tests;

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

pub use self::error::DecodeError;
pub use self::limits::DecodeLimits;
pub use self::reduce::to_rgb8;
pub use self::sniff::probe_format;
use self::sniff::Sniffed;

/// Decodes an uploaded image into 8-bit RGB: [`decode_dynamic`] followed by [`to_rgb8`].
///
/// # Errors
///
/// As [`decode_dynamic`].
pub fn decode_rgb8(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, DecodeError> {
    decode_dynamic(bytes, limits).map(|img| to_rgb8(&img))
}

/// Decodes an uploaded image keeping its original channels and depth (e.g. 16-bit grey), with
/// the same format detection and limits as [`decode_rgb8`]. Orientation metadata is applied.
///
/// # Errors
///
/// - [`DecodeError::Empty`] / [`DecodeError::TooManyBytes`]: the byte count is 0 or over
///   `limits.max_bytes`;
/// - [`DecodeError::UnsupportedFormat`]: the magic bytes are not PNG, JPEG, TIFF or BMP;
/// - [`DecodeError::ZeroPixels`] / [`DecodeError::TooManyPixels`]: the header declares no
///   pixels or more than `limits.max_pixels`;
/// - [`DecodeError::UnsupportedVariant`], [`DecodeError::LimitExceeded`],
///   [`DecodeError::Corrupt`]: the codec refused the data.
pub fn decode_dynamic(bytes: &[u8], limits: &DecodeLimits) -> Result<DynamicImage, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(DecodeError::TooManyBytes {
            bytes: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    let format = match sniff::sniff(bytes) {
        Sniffed::Supported(format) => format,
        Sniffed::Other(name) => {
            return Err(DecodeError::UnsupportedFormat {
                detected: Some(name),
            })
        }
        Sniffed::Unknown => return Err(DecodeError::UnsupportedFormat { detected: None }),
    };
    if let Some((width, height)) = sniff::declared_size(format, bytes) {
        check_size(width, height, limits)?;
    }

    let name = format.name();
    let codec_err = |err| DecodeError::from_image(name, err);
    let mut codec_limits = image::Limits::default();
    codec_limits.max_alloc = Some(limits.max_alloc());
    // The header is parsed with only the allocation budget: a side limit here would refuse an
    // oversized image as a bare `LimitError`, before we could name its size.
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format.image_format());
    reader.limits(codec_limits.clone());
    let mut decoder = reader.into_decoder().map_err(codec_err)?;

    let (width, height) = decoder.dimensions();
    check_size(width, height, limits)?;

    // Second guard, mirroring `ImageReader::decode`: the output buffer is charged to the
    // budget up front and the rest is left to the codec's scratch buffers.
    codec_limits.max_image_width = Some(limits.max_side());
    codec_limits.max_image_height = Some(limits.max_side());
    codec_limits
        .reserve(decoder.total_bytes())
        .map_err(codec_err)?;
    decoder.set_limits(codec_limits).map_err(codec_err)?;

    // Malformed orientation metadata is not worth refusing an image over.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(codec_err)?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// Applies the pixel-count rules to a declared size.
fn check_size(width: u32, height: u32, limits: &DecodeLimits) -> Result<(), DecodeError> {
    if width == 0 || height == 0 {
        return Err(DecodeError::ZeroPixels { width, height });
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(DecodeError::TooManyPixels {
            width,
            height,
            limit: limits.max_pixels,
        });
    }
    Ok(())
}
