//! A writer for PyTorch's `torch.save` zip format, enough for state dicts and checkpoints.
//!
//! The format (PyTorch `torch/serialization.py`, `_save` with the zip writer) is a stored
//! zip archive whose entries all sit under one folder, `<archive>/`:
//!
//! * `data.pkl`: the object, pickled with protocol 2. Each tensor is
//!   `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
//!   OrderedDict())`, where `storage` is a persistent id
//!   `("storage", torch.FloatStorage | torch.LongStorage, key, "cpu", numel)`;
//!   state dicts are `collections.OrderedDict`;
//! * `data/<key>`: the raw little-endian bytes of storage `key` (aligned to 64 bytes in the
//!   archive, as PyTorch does, so `torch.load(mmap=True)` works);
//! * `byteorder` (`little`), `version` (`3`), `.format_version` (`1`) and
//!   `.storage_alignment` (`64`).
//!
//! The pickle uses only opcodes that both Python's unpickler (with `weights_only=True`) and
//! `candle_core::pickle` read. Tests use it to produce files shaped like the old service's
//! `checkpoint_epoch_9.pth.tar` without Python.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// Alignment of storage records inside the archive, the value PyTorch uses.
const STORAGE_ALIGNMENT: u16 = 64;

/// One state-dict value.
#[derive(Debug, Clone, PartialEq)]
pub enum PthTensor {
    /// A float32 tensor, row-major.
    F32 {
        /// Dimensions; `[]` for a scalar.
        shape: Vec<usize>,
        /// `shape.iter().product()` values.
        data: Vec<f32>,
    },
    /// A 0-d int64 tensor, such as BatchNorm's `num_batches_tracked`.
    I64Scalar(i64),
}

impl PthTensor {
    /// Dimensions of the tensor.
    pub fn shape(&self) -> &[usize] {
        match self {
            Self::F32 { shape, .. } => shape,
            Self::I64Scalar(_) => &[],
        }
    }
}

/// How the state dict is wrapped in the saved object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PthWrap {
    /// `torch.save(state_dict)`.
    Bare,
    /// `torch.save({"state_dict": {key_prefix + k: v}, "epoch": epoch})`.
    Checkpoint {
        /// Prepended to every key; `"module."` for a `DataParallel` model.
        key_prefix: String,
        /// Stored under `"epoch"`.
        epoch: i64,
    },
}

impl PthWrap {
    /// The layout of the old service's `checkpoint_epoch_9.pth.tar`.
    pub fn old_service_checkpoint() -> Self {
        Self::Checkpoint {
            key_prefix: "module.".into(),
            epoch: 9,
        }
    }
}

/// Why [`write_pth`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WritePthError {
    /// An entry's data length is not the product of its shape.
    #[error("tensor {name:?}: shape {shape:?} needs {expected} values, got {actual}")]
    ShapeMismatch {
        /// State-dict key.
        name: String,
        /// Declared shape.
        shape: Vec<usize>,
        /// Product of `shape`.
        expected: usize,
        /// Length of the data.
        actual: usize,
    },
    /// The output file could not be created or written.
    #[error("cannot write {path}")]
    Io {
        /// File being written.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The zip writer failed.
    #[error("cannot write zip archive {path}")]
    Zip {
        /// File being written.
        path: PathBuf,
        /// Underlying error.
        source: zip::result::ZipError,
    },
}

/// Write `entries` to `path` in PyTorch's zip serialization, as `torch.save` would.
///
/// Keys keep the order given (PyTorch's `OrderedDict`). With [`PthWrap::Checkpoint`]
/// the keys get its prefix and the state dict is stored under `"state_dict"`, which is
/// what `candle_core::pickle::read_all_with_key(path, Some("state_dict"))` expects.
///
/// # Errors
///
/// [`WritePthError::ShapeMismatch`] before anything is written if an entry's data does not
/// fit its shape; [`WritePthError::Io`] / [`WritePthError::Zip`] if writing fails.
pub fn write_pth(
    path: impl AsRef<Path>,
    entries: &[(String, PthTensor)],
    wrap: PthWrap,
) -> Result<(), WritePthError> {
    let path = path.as_ref();
    for (name, tensor) in entries {
        if let PthTensor::F32 { shape, data } = tensor {
            let expected = shape.iter().product();
            if data.len() != expected {
                return Err(WritePthError::ShapeMismatch {
                    name: name.clone(),
                    shape: shape.clone(),
                    expected,
                    actual: data.len(),
                });
            }
        }
    }
    let zip_err = |source| WritePthError::Zip {
        path: path.to_owned(),
        source,
    };
    let io_err = |source| WritePthError::Io {
        path: path.to_owned(),
        source,
    };

    // PyTorch names the folder after the file ("x.pth.tar" -> "x.pth"); readers accept any.
    let archive = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty() && s.is_ascii())
        .unwrap_or("archive");
    let file = File::create(path).map_err(io_err)?;
    let mut zip = ZipWriter::new(BufWriter::new(file));
    let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);

    let record = |zip: &mut ZipWriter<_>, name: &str, bytes: &[u8], aligned: bool| {
        let options = if aligned {
            stored.with_alignment(STORAGE_ALIGNMENT)
        } else {
            stored
        };
        let options = options.large_file(bytes.len() as u64 >= u64::from(u32::MAX));
        zip.start_file(format!("{archive}/{name}"), options)
            .map_err(zip_err)?;
        zip.write_all(bytes).map_err(io_err)
    };

    record(&mut zip, "data.pkl", &pickle(entries, &wrap), false)?;
    record(&mut zip, ".format_version", b"1", false)?;
    record(&mut zip, ".storage_alignment", b"64", false)?;
    record(&mut zip, "byteorder", b"little", false)?;
    for (key, (_, tensor)) in entries.iter().enumerate() {
        let bytes: Vec<u8> = match tensor {
            PthTensor::F32 { data, .. } => data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            PthTensor::I64Scalar(v) => v.to_le_bytes().to_vec(),
        };
        record(&mut zip, &format!("data/{key}"), &bytes, true)?;
    }
    record(&mut zip, "version", b"3\n", false)?;
    zip.finish().map_err(zip_err)?.flush().map_err(io_err)
}

/// The `data.pkl` bytes: storage `i` belongs to `entries[i]`.
fn pickle(entries: &[(String, PthTensor)], wrap: &PthWrap) -> Vec<u8> {
    let mut p = Pickler::default();
    p.op(PROTO);
    p.op(2);
    let prefix = match wrap {
        PthWrap::Bare => "",
        PthWrap::Checkpoint { key_prefix, .. } => {
            p.op(EMPTY_DICT);
            p.op(MARK);
            p.unicode("state_dict");
            key_prefix
        }
    };
    p.global("collections", "OrderedDict");
    p.op(EMPTY_TUPLE);
    p.op(REDUCE);
    if !entries.is_empty() {
        p.op(MARK);
        for (key, (name, tensor)) in entries.iter().enumerate() {
            p.unicode(&format!("{prefix}{name}"));
            p.tensor(&key.to_string(), tensor);
        }
        p.op(SETITEMS);
    }
    if let PthWrap::Checkpoint { epoch, .. } = wrap {
        p.unicode("epoch");
        p.int(*epoch);
        p.op(SETITEMS);
    }
    p.op(STOP);
    p.buf
}

// Pickle opcodes (CPython Lib/pickletools.py), protocol 2 and lower.
const PROTO: u8 = 0x80;
const STOP: u8 = b'.';
const MARK: u8 = b'(';
const TUPLE: u8 = b't';
const EMPTY_TUPLE: u8 = b')';
const EMPTY_DICT: u8 = b'}';
const SETITEMS: u8 = b'u';
const GLOBAL: u8 = b'c';
const REDUCE: u8 = b'R';
const BINPERSID: u8 = b'Q';
const BINUNICODE: u8 = b'X';
const BININT: u8 = b'J';
const BININT1: u8 = b'K';
const BININT2: u8 = b'M';
const LONG1: u8 = 0x8a;
const NEWFALSE: u8 = 0x89;

/// A minimal protocol-2 pickle emitter. It never memoizes: every object is written in full.
#[derive(Debug, Default)]
struct Pickler {
    buf: Vec<u8>,
}

impl Pickler {
    fn op(&mut self, op: u8) {
        self.buf.push(op);
    }

    fn global(&mut self, module: &str, name: &str) {
        self.op(GLOBAL);
        self.buf
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }

    fn unicode(&mut self, s: &str) {
        self.op(BINUNICODE);
        // Keys and storage names are far below 4 GiB.
        self.buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(s.as_bytes());
    }

    /// The smallest integer opcode, as Python's pickler picks it: candle reads sizes and
    /// strides only from the BININT* forms, which cover every realistic dimension.
    fn int(&mut self, v: i64) {
        if let Ok(v) = u8::try_from(v) {
            self.op(BININT1);
            self.buf.push(v);
        } else if let Ok(v) = u16::try_from(v) {
            self.op(BININT2);
            self.buf.extend_from_slice(&v.to_le_bytes());
        } else if let Ok(v) = i32::try_from(v) {
            self.op(BININT);
            self.buf.extend_from_slice(&v.to_le_bytes());
        } else {
            // Python's LONG1 for 64-bit values: 8 little-endian two's-complement bytes.
            self.op(LONG1);
            self.buf.push(8);
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn ints(&mut self, values: impl IntoIterator<Item = usize>) {
        self.op(MARK);
        for v in values {
            self.int(v as i64);
        }
        self.op(TUPLE);
    }

    /// `_rebuild_tensor_v2(storage, 0, shape, contiguous_stride, False, OrderedDict())`.
    fn tensor(&mut self, key: &str, tensor: &PthTensor) {
        let (storage, shape) = match tensor {
            PthTensor::F32 { shape, .. } => ("FloatStorage", shape.as_slice()),
            PthTensor::I64Scalar(_) => ("LongStorage", &[][..]),
        };
        let numel: usize = shape.iter().product();
        let mut stride = vec![1; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * shape[d + 1];
        }

        self.global("torch._utils", "_rebuild_tensor_v2");
        self.op(MARK);
        // Persistent id of the storage.
        self.op(MARK);
        self.unicode("storage");
        self.global("torch", storage);
        self.unicode(key);
        self.unicode("cpu");
        self.int(numel as i64);
        self.op(TUPLE);
        self.op(BINPERSID);
        self.int(0);
        self.ints(shape.iter().copied());
        self.ints(stride);
        self.op(NEWFALSE);
        self.global("collections", "OrderedDict");
        self.op(EMPTY_TUPLE);
        self.op(REDUCE);
        self.op(TUPLE);
        self.op(REDUCE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_use_the_smallest_opcode() {
        let mut p = Pickler::default();
        for v in [0, 255, 256, 65_535, 65_536, -1, 1 << 40] {
            p.int(v);
        }
        let ops: Vec<u8> = vec![
            BININT1, 0, BININT1, 255, BININT2, 0, 1, BININT2, 255, 255, BININT, 0, 0, 1, 0, BININT,
            255, 255, 255, 255, LONG1, 8, 0, 0, 0, 0, 0, 1, 0, 0,
        ];
        assert_eq!(p.buf, ops);
    }

    #[test]
    fn shape_mismatch_is_refused_before_writing() {
        let dir = std::env::temp_dir().join(format!("pth-writer-test-{}", std::process::id()));
        let path = dir.join("never.pth");
        let bad = PthTensor::F32 {
            shape: vec![2, 2],
            data: vec![0.0; 3],
        };
        let err = write_pth(&path, &[("w".into(), bad)], PthWrap::Bare);
        assert!(matches!(
            err,
            Err(WritePthError::ShapeMismatch {
                expected: 4,
                actual: 3,
                ..
            })
        ));
        assert!(!path.exists());
    }
}
