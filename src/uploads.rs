//! Resolving a task's `imagePath` inside the shared uploads volume (contract section 2).
//!
//! The backend writes `/ML/uploads/<project>/<file>`; a relative path is taken relative to
//! the root. The check is done twice: lexically first (so `../../etc/passwd` is refused as
//! an escape even when it does not exist), then on the canonical path (so a symlink inside
//! the root that points out of it is refused too). The node that pulled the task reads the
//! bytes; peers only ever see bytes.

use std::io;
use std::path::{Component, Path, PathBuf};

/// Why an `imagePath` gives no readable image. Each one fails the task (permanent).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path leaves the uploads root (`..`, or a symlink pointing out of it).
    #[error("image path {path:?} escapes the uploads root {root:?}")]
    Escapes {
        /// The path as sent.
        path: String,
        /// The configured root.
        root: PathBuf,
    },
    /// Nothing exists at the path.
    #[error("image file {path:?} does not exist")]
    NotFound {
        /// The path as sent.
        path: String,
    },
    /// The path names something that is not a regular file (a directory, a FIFO ...).
    #[error("image path {path:?} is not a regular file")]
    NotAFile {
        /// The path as sent.
        path: String,
    },
    /// The file is larger than the configured limit.
    #[error("image file {path:?} has {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// The path as sent.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The uploads root itself cannot be resolved (not mounted?).
    #[error("uploads root {root:?} is unusable")]
    Root {
        /// The configured root.
        root: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Reading the path or the file failed.
    #[error("cannot read image file {path:?}")]
    Io {
        /// The path as sent.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// The uploads root task images must stay inside.
#[derive(Debug, Clone)]
pub struct UploadsRoot {
    root: PathBuf,
    max_bytes: u64,
}

impl UploadsRoot {
    /// A root at `root` whose files may be at most `max_bytes` long.
    pub fn new(root: PathBuf, max_bytes: u64) -> Self {
        Self { root, max_bytes }
    }

    /// The canonical path of `image_path`, checked to be a regular file inside the root.
    pub fn resolve(&self, image_path: &str) -> Result<PathBuf, PathError> {
        let given = Path::new(image_path);
        let joined = if given.is_absolute() {
            given.to_path_buf()
        } else {
            self.root.join(given)
        };
        let escapes = || PathError::Escapes {
            path: image_path.to_owned(),
            root: self.root.clone(),
        };
        let root_lexical = normalize(&self.root);
        if !normalize(&joined).starts_with(&root_lexical) {
            return Err(escapes());
        }
        let root = self.root.canonicalize().map_err(|source| PathError::Root {
            root: self.root.clone(),
            source,
        })?;
        let canonical = joined
            .canonicalize()
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotFound => PathError::NotFound {
                    path: image_path.to_owned(),
                },
                _ => PathError::Io {
                    path: image_path.to_owned(),
                    source,
                },
            })?;
        if !canonical.starts_with(&root) {
            return Err(escapes());
        }
        let meta = std::fs::metadata(&canonical).map_err(|source| PathError::Io {
            path: image_path.to_owned(),
            source,
        })?;
        if !meta.is_file() {
            return Err(PathError::NotAFile {
                path: image_path.to_owned(),
            });
        }
        if meta.len() > self.max_bytes {
            return Err(PathError::TooLarge {
                path: image_path.to_owned(),
                size: meta.len(),
                limit: self.max_bytes,
            });
        }
        Ok(canonical)
    }

    /// Resolves and reads the image (off the async threads).
    pub async fn read(&self, image_path: &str) -> Result<Vec<u8>, PathError> {
        let this = self.clone();
        let image_path = image_path.to_owned();
        let joined = tokio::task::spawn_blocking(move || {
            let path = this.resolve(&image_path)?;
            std::fs::read(&path).map_err(|source| PathError::Io {
                path: image_path,
                source,
            })
        })
        .await;
        joined.unwrap_or_else(|e| {
            Err(PathError::Io {
                path: String::new(),
                source: io::Error::other(e),
            })
        })
    }
}

/// `path` with `.` dropped and `..` applied, without touching the file system
/// (`/a/b/../c` -> `/a/c`; a `..` above the top stays, so it never matches a root).
fn normalize(path: &Path) -> PathBuf {
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(c),
            },
            _ => out.push(c),
        }
    }
    out.iter().collect()
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("uploads");
        fs::create_dir_all(root.join("proj")).expect("mkdir");
        fs::write(root.join("proj/a.png"), b"png").expect("write");
        let outside = dir.path().join("secret.txt");
        fs::write(&outside, b"secret").expect("write");
        Fixture {
            _dir: dir,
            root,
            outside,
        }
    }

    fn uploads(f: &Fixture) -> UploadsRoot {
        UploadsRoot::new(f.root.clone(), 1024)
    }

    #[test]
    fn absolute_and_relative_paths_inside_the_root_resolve() {
        let f = fixture();
        let u = uploads(&f);
        let abs = f.root.join("proj/a.png");
        let want = abs.canonicalize().expect("exists");
        assert_eq!(u.resolve(abs.to_str().expect("utf8")).expect("ok"), want);
        assert_eq!(u.resolve("proj/a.png").expect("ok"), want);
        assert_eq!(u.resolve("./proj/../proj/a.png").expect("ok"), want);
    }

    #[test]
    fn dot_dot_escapes_are_refused_even_when_missing() {
        let f = fixture();
        let u = uploads(&f);
        assert!(matches!(
            u.resolve("../secret.txt"),
            Err(PathError::Escapes { .. })
        ));
        assert!(matches!(
            u.resolve("../../nope/none"),
            Err(PathError::Escapes { .. })
        ));
        assert!(matches!(
            u.resolve(f.outside.to_str().expect("utf8")),
            Err(PathError::Escapes { .. })
        ));
        assert!(matches!(
            u.resolve("/etc/passwd"),
            Err(PathError::Escapes { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_out_of_the_root_are_refused_and_inside_ones_followed() {
        let f = fixture();
        let u = uploads(&f);
        std::os::unix::fs::symlink(&f.outside, f.root.join("proj/link.png")).expect("symlink");
        assert!(matches!(
            u.resolve("proj/link.png"),
            Err(PathError::Escapes { .. })
        ));
        std::os::unix::fs::symlink(f.root.join("proj/a.png"), f.root.join("proj/in.png"))
            .expect("symlink");
        assert!(u.resolve("proj/in.png").is_ok());
    }

    #[test]
    fn missing_directories_and_large_files_are_named() {
        let f = fixture();
        let u = uploads(&f);
        assert!(matches!(
            u.resolve("proj/missing.png"),
            Err(PathError::NotFound { .. })
        ));
        assert!(matches!(u.resolve("proj"), Err(PathError::NotAFile { .. })));
        fs::write(f.root.join("proj/big.png"), vec![0u8; 2048]).expect("write");
        assert!(matches!(
            u.resolve("proj/big.png"),
            Err(PathError::TooLarge { size: 2048, .. })
        ));
        let gone = UploadsRoot::new(f.root.join("not-mounted"), 1024);
        let p = f.root.join("not-mounted/x.png");
        assert!(matches!(
            gone.resolve(p.to_str().expect("utf8")),
            Err(PathError::Root { .. })
        ));
    }

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(normalize(Path::new("/../a")), PathBuf::from("/a"));
        assert_eq!(normalize(Path::new("../a")), PathBuf::from("../a"));
    }
}
