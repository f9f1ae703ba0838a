//! The images a load test sends: the supported files of a folder, or synthetic
//! micrographs from [`spheromesh_inference::synth`] encoded to PNG once each.
//!
//! Files are sent as they are, without decoding: a load test may want to show
//! how the mesh answers a corrupt image, and decoding here would cost time the
//! node spends anyway.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use spheromesh_inference::synth;

/// One image to send, encoded, with the `Content-Type` it goes out with.
#[derive(Clone)]
pub struct TestImage {
    /// File name (or `synth-<seed>.png`), for messages.
    pub name: String,
    /// `image/png`, `image/jpeg`, `image/tiff` or `image/bmp`.
    pub content_type: &'static str,
    /// The encoded bytes, shared by every request that sends this image.
    pub bytes: Arc<[u8]>,
}

// A derived `Debug` would print every byte.
impl std::fmt::Debug for TestImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestImage")
            .field("name", &self.name)
            .field("content_type", &self.content_type)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// Why no images could be prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The folder could not be listed or a file in it could not be read.
    #[error("reading {path}")]
    Read {
        /// The folder or file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The folder holds no file with a supported extension.
    #[error("{dir} holds no PNG, JPEG, TIFF or BMP file")]
    NoImages {
        /// The folder.
        dir: PathBuf,
    },
    /// A generated image could not be made or encoded.
    #[error("generating synthetic image (seed {seed})")]
    Generate {
        /// The sample seed.
        seed: u64,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The `Content-Type` for a file name, by extension (case-insensitive); `None`
/// for anything but PNG, JPEG, TIFF and BMP.
pub(crate) fn content_type_for(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "tif" | "tiff" => "image/tiff",
        "bmp" => "image/bmp",
        _ => return None,
    })
}

/// Reads every PNG/JPEG/TIFF/BMP file directly inside `dir` (not recursive),
/// sorted by name so a run is repeatable. Other files are skipped.
///
/// # Errors
///
/// [`ImageError::Read`] when the folder or a file can't be read,
/// [`ImageError::NoImages`] when no file has a supported extension.
pub fn load_dir(dir: &Path) -> Result<Vec<TestImage>, ImageError> {
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImageError::Read { path, source }
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err(dir))? {
        let path = entry.map_err(read_err(dir))?.path();
        if path.is_file() {
            if let Some(content_type) = content_type_for(&path) {
                files.push((path, content_type));
            }
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(ImageError::NoImages {
            dir: dir.to_path_buf(),
        });
    }
    files
        .into_iter()
        .map(|(path, content_type)| {
            let bytes = std::fs::read(&path).map_err(read_err(&path))?;
            Ok(TestImage {
                name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                content_type,
                bytes: bytes.into(),
            })
        })
        .collect()
}

/// Generates `count` distinct synthetic micrographs, seeds `seed..seed+count`,
/// each encoded to PNG once (16-bit samples stay 16-bit). `size` fixes
/// width x height; `None` lets each seed pick its size (512..=1300 per side, as
/// [`synth::generate`] does).
///
/// # Errors
///
/// [`ImageError::Generate`] when `size` is outside what
/// [`synth::generate_sized`] accepts or PNG encoding fails.
pub fn generate(
    count: usize,
    seed: u64,
    size: Option<(u32, u32)>,
) -> Result<Vec<TestImage>, ImageError> {
    (0..count as u64)
        .map(|i| {
            let seed = seed.wrapping_add(i);
            let gen_err = |e: Box<dyn std::error::Error + Send + Sync>| ImageError::Generate {
                seed,
                source: e,
            };
            let sample = match size {
                Some((w, h)) => synth::generate_sized(seed, w, h).map_err(|e| gen_err(e.into()))?,
                None => synth::generate(seed),
            };
            let mut png = Cursor::new(Vec::new());
            sample
                .image
                .write_to(&mut png, image::ImageFormat::Png)
                .map_err(|e| gen_err(e.into()))?;
            Ok(TestImage {
                name: format!("synth-{seed}.png"),
                content_type: "image/png",
                bytes: png.into_inner().into(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type_for(Path::new("a.PNG")), Some("image/png"));
        assert_eq!(content_type_for(Path::new("a.jpeg")), Some("image/jpeg"));
        assert_eq!(content_type_for(Path::new("a.JPG")), Some("image/jpeg"));
        assert_eq!(content_type_for(Path::new("a.tif")), Some("image/tiff"));
        assert_eq!(content_type_for(Path::new("a.bmp")), Some("image/bmp"));
        assert_eq!(content_type_for(Path::new("a.txt")), None);
        assert_eq!(content_type_for(Path::new("png")), None);
    }

    #[test]
    fn load_dir_keeps_images_sorted_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.jpg"), b"jpeg bytes").unwrap();
        std::fs::write(dir.path().join("a.png"), b"png bytes").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"skip me").unwrap();
        let images = load_dir(dir.path()).unwrap();
        let names: Vec<_> = images
            .iter()
            .map(|i| (i.name.as_str(), i.content_type))
            .collect();
        assert_eq!(names, [("a.png", "image/png"), ("b.jpg", "image/jpeg")]);
        assert_eq!(&*images[1].bytes, b"jpeg bytes");
    }

    #[test]
    fn load_dir_without_images_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"skip me").unwrap();
        assert!(matches!(
            load_dir(dir.path()),
            Err(ImageError::NoImages { .. })
        ));
        let missing = dir.path().join("missing");
        assert!(matches!(load_dir(&missing), Err(ImageError::Read { .. })));
    }

    #[test]
    fn generated_images_are_distinct_pngs() {
        let images = generate(2, 11, Some((64, 80))).unwrap();
        assert_eq!(images.len(), 2);
        assert_ne!(images[0].bytes, images[1].bytes);
        for img in &images {
            let decoded =
                image::load_from_memory_with_format(&img.bytes, image::ImageFormat::Png).unwrap();
            assert_eq!((decoded.width(), decoded.height()), (64, 80));
        }
        assert!(matches!(
            generate(1, 0, Some((8, 8))),
            Err(ImageError::Generate { seed: 0, .. })
        ));
    }
}
