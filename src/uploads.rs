//! Paths under the uploads root: the shared volume where the backend stores images
//! (`/ML/uploads` by default). A path that escapes the root, by `..` or by a symlink
//! pointing out of it, is refused.

use std::io;
use std::path::{Path, PathBuf};

/// Why a path under the uploads root cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum UploadPathError {
    /// The path is empty.
    #[error("the image path is empty")]
    Empty,
    /// The path resolves to a place outside the uploads root.
    #[error("{path} is outside the uploads root {root}")]
    OutsideRoot {
        /// The path given.
        path: String,
        /// The uploads root.
        root: PathBuf,
    },
    /// The file does not exist or cannot be resolved.
    #[error("cannot open {path}: {source}")]
    NotFound {
        /// The path given.
        path: String,
        /// The OS error.
        source: io::Error,
    },
}

/// Resolves `path` (absolute, or relative to `root`) to a canonical file path inside
/// `root`, following symlinks before the containment check.
///
/// # Errors
///
/// [`UploadPathError`] for an empty path, a missing file, or one outside the root.
pub fn resolve_under(root: &Path, path: &str) -> Result<PathBuf, UploadPathError> {
    if path.trim().is_empty() {
        return Err(UploadPathError::Empty);
    }
    let root = root
        .canonicalize()
        .map_err(|source| UploadPathError::NotFound {
            path: root.display().to_string(),
            source,
        })?;
    let joined = root.join(path);
    // A `..` never reaches the filesystem check below as a way out: canonicalize removes it.
    let resolved = joined
        .canonicalize()
        .map_err(|source| UploadPathError::NotFound {
            path: path.to_owned(),
            source,
        })?;
    if resolved.starts_with(&root) {
        Ok(resolved)
    } else {
        Err(UploadPathError::OutsideRoot {
            path: path.to_owned(),
            root,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_are_resolved_and_escapes_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("uploads");
        std::fs::create_dir_all(root.join("proj")).expect("mkdir");
        std::fs::write(root.join("proj/a.png"), b"x").expect("write");
        std::fs::write(dir.path().join("secret.png"), b"x").expect("write");
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.path().join("secret.png"), root.join("proj/link.png"))
            .expect("symlink");

        let inside = resolve_under(&root, "proj/a.png").expect("relative");
        assert!(inside.ends_with("proj/a.png"));
        let absolute = root.join("proj/a.png");
        assert!(resolve_under(&root, &absolute.to_string_lossy()).is_ok());
        assert!(matches!(
            resolve_under(&root, "../secret.png"),
            Err(UploadPathError::OutsideRoot { .. })
        ));
        assert!(matches!(
            resolve_under(&root, &dir.path().join("secret.png").to_string_lossy()),
            Err(UploadPathError::OutsideRoot { .. })
        ));
        #[cfg(unix)]
        assert!(matches!(
            resolve_under(&root, "proj/link.png"),
            Err(UploadPathError::OutsideRoot { .. })
        ));
        assert!(matches!(
            resolve_under(&root, "proj/missing.png"),
            Err(UploadPathError::NotFound { .. })
        ));
        assert!(matches!(
            resolve_under(&root, " "),
            Err(UploadPathError::Empty)
        ));
    }
}
