//! Tests of the decode module: every format and depth, every error variant, and fuzzing with
//! random and mutated inputs.

use std::io::Cursor;
use std::sync::OnceLock;

use image::{
    DynamicImage, GrayImage, ImageBuffer, ImageFormat, Luma, LumaA, Rgb, RgbImage, Rgba, RgbaImage,
};
use proptest::prelude::*;

use super::*;

const W: u32 = 16;
const H: u32 = 12;

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode test image");
    out.into_inner()
}

fn decode(bytes: &[u8]) -> Result<RgbImage, DecodeError> {
    decode_rgb8(bytes, &DecodeLimits::default())
}

fn rgb8() -> RgbImage {
    RgbImage::from_fn(W, H, |x, y| {
        Rgb([(x * 16) as u8, (y * 20) as u8, (x + y) as u8 * 5])
    })
}

/// Test images committed in `tests/fixtures/images`, made with the `tiff` and `png` crates.
const GREY16_LZW_TIF: &[u8] = include_bytes!("../../tests/fixtures/images/grey16_lzw.tif");
const RGB16_DEFLATE_TIF: &[u8] = include_bytes!("../../tests/fixtures/images/rgb16_deflate.tif");
const RGBA8_LZW_TIF: &[u8] = include_bytes!("../../tests/fixtures/images/rgba8_lzw.tif");
const GREY8_ORIENTATION6_TIF: &[u8] =
    include_bytes!("../../tests/fixtures/images/grey8_orientation6.tif");
const GREY8_PNG: &[u8] = include_bytes!("../../tests/fixtures/images/grey8.png");

/// `round((v - min) * 255 / (max - min))`, the documented stretch.
fn stretched(v: u16, min: u16, max: u16) -> u8 {
    (f64::from(v - min) * 255.0 / f64::from(max - min)).round() as u8
}

// ---- formats and depths ---------------------------------------------------------------------

#[test]
fn rgb8_roundtrips_through_lossless_formats() {
    let img = DynamicImage::ImageRgb8(rgb8());
    for format in [ImageFormat::Png, ImageFormat::Tiff, ImageFormat::Bmp] {
        let bytes = encode(&img, format);
        assert_eq!(decode(&bytes).expect("decode"), rgb8(), "{format:?}");
    }
}

#[test]
fn grey8_is_replicated() {
    let grey = GrayImage::from_fn(W, H, |x, y| Luma([(x * 16 + y) as u8]));
    let want = RgbImage::from_fn(W, H, |x, y| Rgb([(x * 16 + y) as u8; 3]));
    for format in [ImageFormat::Png, ImageFormat::Tiff, ImageFormat::Bmp] {
        let bytes = encode(&DynamicImage::ImageLuma8(grey.clone()), format);
        assert_eq!(decode(&bytes).expect("decode"), want, "{format:?}");
    }
    assert_eq!(decode(GREY8_PNG).expect("decode fixture"), want);
}

#[test]
fn alpha_is_dropped_not_blended() {
    let rgba = RgbaImage::from_fn(W, H, |x, y| {
        let Rgb([r, g, b]) = *rgb8().get_pixel(x, y);
        Rgba([r, g, b, (x * 10) as u8])
    });
    for format in [ImageFormat::Png, ImageFormat::Tiff, ImageFormat::Bmp] {
        let bytes = encode(&DynamicImage::ImageRgba8(rgba.clone()), format);
        assert_eq!(decode(&bytes).expect("decode"), rgb8(), "{format:?}");
    }
    let la = ImageBuffer::from_fn(W, H, |x, _| LumaA([x as u8 * 9, 17]));
    let bytes = encode(&DynamicImage::ImageLumaA8(la), ImageFormat::Png);
    let got = decode(&bytes).expect("decode");
    assert_eq!(*got.get_pixel(3, 5), Rgb([27; 3]));
    // Fixture: RGBA8 TIFF, LZW, alpha 128 everywhere.
    assert_eq!(decode(RGBA8_LZW_TIF).expect("decode fixture"), rgb8());
}

#[test]
fn grey16_is_stretched_from_its_own_range() {
    // A 12-bit camera frame in a 16-bit container: 100..=3920.
    let grey = ImageBuffer::from_fn(W, H, |x, y| Luma([100 + 20 * (x + W * y) as u16]));
    let img = DynamicImage::ImageLuma16(grey);
    for bytes in [
        encode(&img, ImageFormat::Png),
        encode(&img, ImageFormat::Tiff),
        GREY16_LZW_TIF.to_vec(),
    ] {
        assert!(probe_format(&bytes).is_some());
        let got = decode(&bytes).expect("decode");
        for (x, y, px) in got.enumerate_pixels() {
            let v = 100 + 20 * (x + W * y) as u16;
            assert_eq!(*px, Rgb([stretched(v, 100, 3920); 3]), "at {x},{y}");
        }
        assert_eq!(got.get_pixel(0, 0), &Rgb([0; 3]));
        assert_eq!(got.get_pixel(W - 1, H - 1), &Rgb([255; 3]));
    }
}

#[test]
fn rgb16_is_stretched_with_one_range_for_all_channels() {
    let value = |i: u16| [1000 + 10 * i, 2000 + 5 * i, 3000 - 7 * i];
    let (min, max) = (1000, 3000);
    let rgb = ImageBuffer::from_fn(W, H, |x, y| Rgb(value((x + W * y) as u16)));
    let rgba = ImageBuffer::from_fn(W, H, |x, y| {
        let [r, g, b] = value((x + W * y) as u16);
        Rgba([r, g, b, 65535])
    });
    for bytes in [
        encode(&DynamicImage::ImageRgb16(rgb), ImageFormat::Png),
        encode(&DynamicImage::ImageRgba16(rgba.clone()), ImageFormat::Png),
        encode(&DynamicImage::ImageRgba16(rgba), ImageFormat::Tiff),
        RGB16_DEFLATE_TIF.to_vec(),
    ] {
        let got = decode(&bytes).expect("decode");
        for (x, y, px) in got.enumerate_pixels() {
            let want = value((x + W * y) as u16).map(|v| stretched(v, min, max));
            assert_eq!(px.0, want, "at {x},{y}");
        }
    }
}

#[test]
fn decode_dynamic_keeps_the_original_depth() {
    let img = decode_dynamic(GREY16_LZW_TIF, &DecodeLimits::default()).expect("decode");
    let DynamicImage::ImageLuma16(grey) = img else {
        panic!("expected 16-bit grey, got {:?}", img.color());
    };
    assert_eq!(grey.get_pixel(1, 0), &Luma([120]));
    assert_eq!(grey.get_pixel(W - 1, H - 1), &Luma([3920]));
}

/// The fixture stores 4x2 pixels `10 * (x + 4 * y)` with Orientation 6 ("rotate 90 degrees
/// clockwise to display"), so the decoded image is 2x4 with stored (x, y) at (1 - y, x).
#[test]
fn orientation_metadata_is_applied() {
    let got = decode(GREY8_ORIENTATION6_TIF).expect("decode fixture");
    assert_eq!(got.dimensions(), (2, 4));
    for (x, y) in (0..4).flat_map(|x| (0..2).map(move |y| (x, y))) {
        let v = (10 * (x + 4 * y)) as u8;
        assert_eq!(got.get_pixel(1 - y, x), &Rgb([v; 3]), "stored {x},{y}");
    }
}

#[test]
fn jpeg_decodes_close_to_the_original() {
    let smooth = RgbImage::from_fn(32, 32, |x, y| Rgb([(x * 8) as u8, (y * 8) as u8, 128]));
    let bytes = encode(&DynamicImage::ImageRgb8(smooth.clone()), ImageFormat::Jpeg);
    assert_eq!(probe_format(&bytes), Some("JPEG"));
    let got = decode(&bytes).expect("decode");
    assert_eq!(got.dimensions(), (32, 32));
    let worst = got
        .as_raw()
        .iter()
        .zip(smooth.as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .max();
    assert!(worst.is_some_and(|d| d <= 12), "max error {worst:?}");

    let grey = GrayImage::from_fn(32, 32, |x, _| Luma([(x * 8) as u8]));
    let bytes = encode(&DynamicImage::ImageLuma8(grey), ImageFormat::Jpeg);
    let got = decode(&bytes).expect("decode grey jpeg");
    assert!(got.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
}

#[test]
fn to_rgb8_reduces_synthetic_images_the_same_way() {
    let constant = DynamicImage::ImageLuma16(ImageBuffer::from_pixel(4, 4, Luma([4000])));
    assert!(to_rgb8(&constant).as_raw().iter().all(|&v| v == 0));

    let float = ImageBuffer::from_fn(3, 1, |x, _| {
        Rgb([[-1.0, 0.0, 1.0][x as usize], f32::NAN, f32::INFINITY])
    });
    let got = to_rgb8(&DynamicImage::ImageRgb32F(float));
    assert_eq!(got.as_raw(), &[0, 0, 255, 128, 0, 255, 255, 0, 255]);

    let rgb = DynamicImage::ImageRgb8(rgb8());
    assert_eq!(to_rgb8(&rgb), rgb8());
}

// ---- errors ---------------------------------------------------------------------------------

#[test]
fn empty_and_oversized_inputs_are_refused_first() {
    assert!(matches!(decode(&[]), Err(DecodeError::Empty)));
    let bytes = encode(&DynamicImage::ImageRgb8(rgb8()), ImageFormat::Png);
    let limits = DecodeLimits {
        max_bytes: bytes.len() - 1,
        ..DecodeLimits::default()
    };
    let err = decode_rgb8(&bytes, &limits).expect_err("over the byte cap");
    assert!(
        matches!(err, DecodeError::TooManyBytes { bytes: b, limit } if b == bytes.len() && limit == b - 1)
    );
}

#[test]
fn unsupported_formats_are_named_when_known() {
    let cases: [(&[u8], Option<&str>); 5] = [
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", Some("GIF")),
        (
            b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00",
            Some("WebP"),
        ),
        (b"%PDF-1.7\n", Some("PDF")),
        (b"hello, this is not an image", None),
        (b"\x00", None),
    ];
    for (bytes, want) in cases {
        let err = decode(bytes).expect_err("unsupported");
        assert!(
            matches!(err, DecodeError::UnsupportedFormat { detected } if detected == want),
            "{err:?}"
        );
        assert_eq!(probe_format(bytes), None);
    }
}

#[test]
fn truncated_files_are_corrupt() {
    let img = DynamicImage::ImageRgb8(rgb8());
    for (format, name) in [
        (ImageFormat::Png, "PNG"),
        (ImageFormat::Tiff, "TIFF"),
        (ImageFormat::Bmp, "BMP"),
    ] {
        let bytes = encode(&img, format);
        // Not `len - 1`: a PNG missing only the end of its IEND chunk still has all its pixels,
        // and decoding it is fine.
        for keep in [8, 30, bytes.len() / 2] {
            let Err(err) = decode(&bytes[..keep]) else {
                panic!("{name} cut to {keep} bytes decoded");
            };
            assert!(
                matches!(err, DecodeError::Corrupt { format, .. } if format == name),
                "{name} cut to {keep}: {err:?}"
            );
        }
    }
    // A JPEG cut inside its headers cannot be decoded either.
    let jpeg = encode(&img, ImageFormat::Jpeg);
    let err = decode(&jpeg[..20]).expect_err("truncated jpeg");
    assert!(
        matches!(err, DecodeError::Corrupt { format: "JPEG", .. }),
        "{err:?}"
    );
}

#[test]
fn damaged_png_data_is_corrupt() {
    let mut bytes = encode(&DynamicImage::ImageRgb8(rgb8()), ImageFormat::Png);
    let idat = find(&bytes, b"IDAT").expect("IDAT chunk");
    // Break the zlib stream header inside IDAT (its CRC then fails too).
    bytes[idat + 4] ^= 0xFF;
    bytes[idat + 5] ^= 0xFF;
    assert!(matches!(
        decode(&bytes),
        Err(DecodeError::Corrupt { format: "PNG", .. })
    ));
}

#[test]
fn zero_sized_headers_are_refused() {
    let png = png_with_size(0, 10);
    assert!(matches!(
        decode(&png),
        Err(DecodeError::ZeroPixels {
            width: 0,
            height: 10
        })
    ));
    let mut bmp = encode(&DynamicImage::ImageRgb8(rgb8()), ImageFormat::Bmp);
    bmp[18..22].copy_from_slice(&0_i32.to_le_bytes());
    assert!(matches!(
        decode(&bmp),
        Err(DecodeError::ZeroPixels {
            width: 0,
            height: H
        })
    ));
    let mut jpeg = encode(&DynamicImage::ImageRgb8(rgb8()), ImageFormat::Jpeg);
    let sof = find(&jpeg, b"\xFF\xC0").expect("SOF0");
    jpeg[sof + 5..sof + 7].copy_from_slice(&0_u16.to_be_bytes()); // height
    assert!(matches!(
        decode(&jpeg),
        Err(DecodeError::ZeroPixels {
            width: W,
            height: 0
        })
    ));
}

#[test]
fn decompression_bombs_are_refused_before_decoding() {
    let limit = DecodeLimits::DEFAULT_MAX_PIXELS;
    let png = png_with_size(60_000, 60_000);
    assert!(png.len() < 100);
    assert!(matches!(
        decode(&png),
        Err(DecodeError::TooManyPixels { width: 60_000, height: 60_000, limit: l }) if l == limit
    ));

    let mut bmp = encode(&DynamicImage::ImageRgb8(rgb8()), ImageFormat::Bmp);
    bmp[18..22].copy_from_slice(&60_000_i32.to_le_bytes());
    bmp[22..26].copy_from_slice(&(-60_000_i32).to_le_bytes()); // top-down
    assert!(matches!(
        decode(&bmp),
        Err(DecodeError::TooManyPixels {
            width: 60_000,
            height: 60_000,
            ..
        })
    ));

    let mut jpeg = encode(&DynamicImage::ImageRgb8(rgb8()), ImageFormat::Jpeg);
    let sof = find(&jpeg, b"\xFF\xC0").expect("SOF0");
    jpeg[sof + 5..sof + 7].copy_from_slice(&60_000_u16.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&60_000_u16.to_be_bytes());
    assert!(matches!(
        decode(&jpeg),
        Err(DecodeError::TooManyPixels {
            width: 60_000,
            height: 60_000,
            ..
        })
    ));

    // TIFF keeps its size in the IFD: the codec's header pass reports it.
    let mut tiff = GREY16_LZW_TIF.to_vec();
    set_tiff_tag(&mut tiff, 256, 60_000);
    set_tiff_tag(&mut tiff, 257, 60_000);
    set_tiff_tag(&mut tiff, 278, 60_000); // RowsPerStrip: still one strip
    let err = decode(&tiff);
    assert!(
        matches!(
            err,
            Err(DecodeError::TooManyPixels {
                width: 60_000,
                height: 60_000,
                ..
            })
        ),
        "{err:?}"
    );
}

#[test]
fn pixel_limit_is_inclusive() {
    let bytes = encode(&DynamicImage::ImageRgb8(rgb8()), ImageFormat::Png);
    let exact = DecodeLimits {
        max_pixels: u64::from(W * H),
        ..DecodeLimits::default()
    };
    assert!(decode_rgb8(&bytes, &exact).is_ok());
    let under = DecodeLimits {
        max_pixels: u64::from(W * H) - 1,
        ..exact
    };
    assert!(matches!(
        decode_rgb8(&bytes, &under),
        Err(DecodeError::TooManyPixels {
            width: W,
            height: H,
            ..
        })
    ));
}

#[test]
fn defaults_are_documented_values() {
    let limits = DecodeLimits::default();
    assert_eq!(limits.max_bytes, 64 * 1024 * 1024);
    assert_eq!(limits.max_pixels, 40_000_000);
}

// ---- helpers --------------------------------------------------------------------------------

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// CRC-32 (ISO-HDLC) as PNG chunks use it.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0_u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A well-formed PNG header (valid CRCs) declaring `width` x `height` 8-bit RGB, with a tiny
/// IDAT (a zlib stream of one stored empty block) and IEND.
fn png_with_size(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1A\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x01, 0x01, 0x00, 0x00, 0xFF, 0xFF, 0, 0, 0, 1],
    );
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// Overwrites a SHORT or LONG tag of the first IFD of a little-endian TIFF with `value`, as a
/// LONG.
fn set_tiff_tag(tiff: &mut [u8], tag: u16, value: u32) {
    let le16 = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    assert_eq!(&tiff[..4], b"II*\0");
    let ifd = u32::from_le_bytes([tiff[4], tiff[5], tiff[6], tiff[7]]) as usize;
    let count = usize::from(le16(tiff, ifd));
    let entry = (0..count)
        .map(|i| ifd + 2 + 12 * i)
        .find(|&at| le16(tiff, at) == tag)
        .expect("tag present");
    tiff[entry + 2..entry + 4].copy_from_slice(&4_u16.to_le_bytes()); // LONG
    tiff[entry + 4..entry + 8].copy_from_slice(&1_u32.to_le_bytes());
    tiff[entry + 8..entry + 12].copy_from_slice(&value.to_le_bytes());
}

// ---- fuzzing --------------------------------------------------------------------------------

/// Small limits, so that headers mutated into large sizes hit them.
const FUZZ_LIMITS: DecodeLimits = DecodeLimits {
    max_bytes: 64 * 1024,
    max_pixels: 64 * 64,
};

fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(make_seeds)
}

fn make_seeds() -> Vec<Vec<u8>> {
    let rgb = DynamicImage::ImageRgb8(rgb8());
    let grey16 = DynamicImage::ImageLuma16(ImageBuffer::from_fn(W, H, |x, y| {
        Luma([(x * 1000 + y * 7) as u16])
    }));
    vec![
        encode(&rgb, ImageFormat::Png),
        encode(&grey16, ImageFormat::Png),
        encode(&rgb, ImageFormat::Jpeg),
        encode(&rgb, ImageFormat::Bmp),
        encode(&grey16, ImageFormat::Tiff),
        GREY16_LZW_TIF.to_vec(),
        RGB16_DEFLATE_TIF.to_vec(),
        RGBA8_LZW_TIF.to_vec(),
        GREY8_ORIENTATION6_TIF.to_vec(),
    ]
}

/// Whatever the input, a decode returns (no panic) and an accepted image is within limits.
fn check_within_limits(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(img) = decode_rgb8(bytes, &FUZZ_LIMITS) {
        let pixels = u64::from(img.width()) * u64::from(img.height());
        prop_assert!(pixels > 0 && pixels <= FUZZ_LIMITS.max_pixels);
        prop_assert!(bytes.len() <= FUZZ_LIMITS.max_bytes);
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(at, v)| Mutation::Set(at, v)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, v)| Mutation::Insert(at, v)),
        1 => (any::<usize>(), 1..32_usize).prop_map(|(at, n)| Mutation::Delete(at, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len().max(1);
    match m {
        Mutation::Set(at, v) => {
            if let Some(b) = bytes.get_mut(at % len) {
                *b = *v;
            }
        }
        Mutation::Truncate(at) => bytes.truncate(at % len),
        Mutation::Insert(at, v) => {
            let at = at % len;
            let at = at.min(bytes.len());
            bytes.splice(at..at, v.iter().copied());
        }
        Mutation::Delete(at, n) => {
            let at = (at % len).min(bytes.len());
            let end = (at + n).min(bytes.len());
            bytes.drain(at..end);
        }
    }
}

// 256 cases each by default; set PROPTEST_CASES for a longer run.
proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        check_within_limits(&bytes)?;
    }

    #[test]
    fn random_bytes_behind_a_real_magic_never_panic(
        magic in 0..5_usize,
        tail in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let magics: [&[u8]; 5] =
            [b"\x89PNG\r\n\x1A\n", b"\xFF\xD8\xFF", b"II*\0", b"MM\0*", b"BM"];
        let mut bytes = magics[magic].to_vec();
        bytes.extend(tail);
        check_within_limits(&bytes)?;
    }

    #[test]
    fn mutated_images_never_panic(
        seed in 0..9_usize,
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        let mut bytes = seeds()[seed].clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        check_within_limits(&bytes)?;
    }
}
