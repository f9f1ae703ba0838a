//! Format detection from magic bytes (never from a file name), and a peek at the image size a
//! header declares, read straight from the bytes before any codec runs.
//!
//! Signatures follow the format specifications: PNG (ISO/IEC 15948 §5.2, §11.2.2 IHDR), JPEG
//! (ITU-T T.81 §B.1.1.3, SOI then SOFn frame header), TIFF 6.0 §2 (+ BigTIFF), BMP
//! (`BITMAPFILEHEADER` + `BITMAPCOREHEADER`/`BITMAPINFOHEADER`).

/// A container format this crate decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Png,
    Jpeg,
    Tiff,
    Bmp,
}

impl Format {
    /// Name used in errors and returned by [`probe_format`].
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Png => "PNG",
            Self::Jpeg => "JPEG",
            Self::Tiff => "TIFF",
            Self::Bmp => "BMP",
        }
    }

    /// The matching `image` codec.
    pub(super) fn image_format(self) -> image::ImageFormat {
        match self {
            Self::Png => image::ImageFormat::Png,
            Self::Jpeg => image::ImageFormat::Jpeg,
            Self::Tiff => image::ImageFormat::Tiff,
            Self::Bmp => image::ImageFormat::Bmp,
        }
    }
}

/// What the magic bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sniffed {
    /// A format we decode.
    Supported(Format),
    /// A format we recognise by name but do not decode.
    Other(&'static str),
    /// No known signature.
    Unknown,
}

/// Signatures of formats we decline, so the error can name what was sent.
const OTHER_SIGNATURES: &[(&[u8], &str)] = &[
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"\x00\x00\x00\x0CjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xFF\x4F\xFF\x51", "JPEG 2000"),
    (b"\x00\x00\x00\x0CJXL \r\n\x87\n", "JPEG XL"),
    (b"\xFF\x0A", "JPEG XL"),
    (b"\x76\x2F\x31\x01", "OpenEXR"),
    (b"8BPS", "PSD"),
    (b"%PDF", "PDF"),
    (b"qoif", "QOI"),
    (b"farbfeld", "farbfeld"),
    (b"#?RADIANCE", "Radiance HDR"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x93NUMPY", "NumPy"),
    (b"PK\x03\x04", "ZIP"),
    (b"\x1F\x8B", "gzip"),
];

/// Classifies `bytes` by their magic number.
pub(super) fn sniff(bytes: &[u8]) -> Sniffed {
    let supported = if bytes.starts_with(b"\x89PNG\r\n\x1A\n") {
        Some(Format::Png)
    } else if bytes.starts_with(b"\xFF\xD8\xFF") {
        Some(Format::Jpeg)
    } else if [b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"]
        .iter()
        .any(|magic| bytes.starts_with(*magic))
    {
        // Classic TIFF and BigTIFF, little and big endian.
        Some(Format::Tiff)
    } else if bytes.starts_with(b"BM") {
        Some(Format::Bmp)
    } else {
        None
    };
    if let Some(format) = supported {
        return Sniffed::Supported(format);
    }
    if let Some((_, name)) = OTHER_SIGNATURES
        .iter()
        .find(|(magic, _)| bytes.starts_with(magic))
    {
        return Sniffed::Other(name);
    }
    if bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WEBP") {
        return Sniffed::Other("WebP");
    }
    if bytes.get(4..8) == Some(b"ftyp") {
        return Sniffed::Other(match bytes.get(8..12) {
            Some(b"avif" | b"avis") => "AVIF",
            _ => "HEIF/MP4",
        });
    }
    if bytes.get(128..132) == Some(b"DICM") {
        return Sniffed::Other("DICOM");
    }
    Sniffed::Unknown
}

/// The name (`"PNG"`, `"JPEG"`, `"TIFF"` or `"BMP"`) of the supported format that `bytes` start
/// with, judged from the magic bytes alone; `None` for anything else. A `Some` does not promise
/// that the rest of the file is valid.
pub fn probe_format(bytes: &[u8]) -> Option<&'static str> {
    match sniff(bytes) {
        Sniffed::Supported(format) => Some(format.name()),
        Sniffed::Other(_) | Sniffed::Unknown => None,
    }
}

/// The `(width, height)` declared by a PNG, BMP or JPEG header, read without a codec so that
/// zero-sized and oversized images are refused before the codec sees them. `None` when the
/// header is too short or malformed to tell (the codec then reports the damage), and always for
/// TIFF, whose size sits in an IFD anywhere in the file (the codec reads that without
/// allocating pixel buffers).
pub(super) fn declared_size(format: Format, bytes: &[u8]) -> Option<(u32, u32)> {
    match format {
        Format::Png => png_size(bytes),
        Format::Bmp => bmp_size(bytes),
        Format::Jpeg => jpeg_size(bytes),
        Format::Tiff => None,
    }
}

fn be_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn le_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn le_i32(bytes: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// IHDR must be the first chunk: length 13 at 8, type at 12, width and height at 16 and 20.
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.get(12..16) != Some(b"IHDR") {
        return None;
    }
    Some((be_u32(bytes, 16)?, be_u32(bytes, 20)?))
}

/// The DIB header follows the 14-byte file header; its first field is its own size.
fn bmp_size(bytes: &[u8]) -> Option<(u32, u32)> {
    let dib_size = le_i32(bytes, 14)?;
    if dib_size == 12 {
        // BITMAPCOREHEADER: unsigned 16-bit sides.
        return Some((le_u16(bytes, 18)?.into(), le_u16(bytes, 20)?.into()));
    }
    let width = u32::try_from(le_i32(bytes, 18)?).ok()?;
    // A negative height means rows are stored top-down.
    let height = le_i32(bytes, 22)?.unsigned_abs();
    Some((width, height))
}

/// Walks the marker segments up to the first SOFn frame header.
fn jpeg_size(bytes: &[u8]) -> Option<(u32, u32)> {
    let mut at = 2; // after SOI
    loop {
        if *bytes.get(at)? != 0xFF {
            return None;
        }
        // Any number of 0xFF fill bytes may precede a marker code.
        while *bytes.get(at + 1)? == 0xFF {
            at += 1;
        }
        let marker = *bytes.get(at + 1)?;
        at += 2;
        match marker {
            // Standalone markers carry no length.
            0x01 | 0xD0..=0xD7 => {}
            // EOI or start of scan before any frame header.
            0xD9 | 0xDA => return None,
            // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC):
            // length(2) precision(1) height(2) width(2).
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                let height = be_u16(bytes, at + 3)?;
                let width = be_u16(bytes, at + 5)?;
                return Some((width.into(), height.into()));
            }
            _ => {
                let len = usize::from(be_u16(bytes, at)?);
                if len < 2 {
                    return None;
                }
                at += len;
            }
        }
    }
}
