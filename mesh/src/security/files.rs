//! Reading and writing credential files: keys are created owner-only (0600) in an owner-only
//! directory (0700), and every write goes to a temporary file that is then renamed over the
//! target, so a crash never leaves a half-written certificate or key behind.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::certs::CertError;

/// Unix mode of a private key file.
pub(crate) const SECRET: u32 = 0o600;

/// Unix mode of a certificate file.
pub(crate) const PUBLIC: u32 = 0o644;

/// Unix mode of a directory created for credentials.
const DIR_MODE: u32 = 0o700;

/// Creates `dir` and its parents; new directories are owner-only.
pub(crate) fn create_dir(dir: &Path) -> Result<(), CertError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    #[cfg(not(unix))]
    let _ = DIR_MODE;
    builder.create(dir).map_err(|source| CertError::Write {
        path: dir.to_owned(),
        source,
    })
}

/// Writes `contents` to `path` through a temporary file in the same directory, with `mode`.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    let tmp = temp_path(path);
    let result = write_new(&tmp, contents, mode).and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        // Best effort: the write error below is what matters.
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|source| CertError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Reads `path` as UTF-8.
pub(crate) fn read(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Read {
        path: path.to_owned(),
        source,
    })
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    let mut file = options.open(path)?;
    // `mode` applies only when the file is created; a stale temporary file keeps its old mode.
    #[cfg(unix)]
    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    #[cfg(not(unix))]
    let _ = mode;
    file.write_all(contents)?;
    file.sync_all()
}

/// `<dir>/.<name>.tmp`, next to `path` so that the rename stays on one file system.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}
