//! Loading and saving ResUNet weights, strictly.
//!
//! Accepted forms: safetensors (ours, with architecture metadata), and the old
//! service's PyTorch checkpoints - the zip format `torch.save` writes since
//! PyTorch 1.6 - either `{"state_dict": {...}, ...}` (as
//! `checkpoint_epoch_9.pth.tar`) or a bare state dict, keys optionally
//! prefixed `module.` (`nn.DataParallel`). Widths are read from the tensor
//! shapes; GroupNorm groups and input size come from safetensors metadata and
//! default to the original service's 32 groups at 1024x1024.
//!
//! Loading is strict: a missing, unexpected or mis-shaped tensor is an error
//! naming it (BatchNorm `num_batches_tracked` counters are the one allowed
//! extra, since every PyTorch state dict carries them).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::config::{InvalidConfig, ResUNetConfig};

/// Safetensors metadata key holding the GroupNorm group count.
const META_GN_GROUPS: &str = "gn_groups";
/// Safetensors metadata key holding the network input side.
const META_INPUT_SIZE: &str = "input_size";

/// Why a weights file could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WeightsError {
    /// The file could not be read or written.
    #[error("cannot access weights file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Neither safetensors nor a PyTorch zip checkpoint.
    #[error("{path} is neither safetensors nor a PyTorch zip checkpoint (legacy non-zip .pth files are not supported: re-save them with torch >= 1.6)")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// The file has the right container but its content could not be parsed.
    #[error("cannot parse weights in {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: candle_core::Error,
    },
    /// A tensor the architecture needs is absent.
    #[error("checkpoint is missing tensor `{name}`")]
    MissingTensor {
        /// State-dict key, without `module.`.
        name: String,
    },
    /// A tensor the architecture does not have.
    #[error("checkpoint has unexpected tensor `{name}`")]
    UnexpectedTensor {
        /// State-dict key, without `module.`.
        name: String,
    },
    /// A tensor with the wrong shape.
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// State-dict key.
        name: String,
        /// Shape the architecture needs.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// A metadata value that is not a positive integer.
    #[error("metadata `{key}` = `{value}` is not a positive integer")]
    BadMetadata {
        /// Metadata key.
        key: String,
        /// Its value.
        value: String,
    },
    /// The shapes describe an architecture that cannot be built.
    #[error(transparent)]
    InvalidConfig(#[from] InvalidConfig),
    /// A tensor operation failed while converting or writing.
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// Tensors of a checkpoint by state-dict key (no `module.` prefix), plus metadata.
#[derive(Debug)]
pub(crate) struct Checkpoint {
    pub(crate) tensors: HashMap<String, Tensor>,
    pub(crate) metadata: HashMap<String, String>,
}

/// Reads every tensor of a safetensors or PyTorch file onto the CPU.
pub(crate) fn read_checkpoint(path: &Path) -> Result<Checkpoint, WeightsError> {
    let io = |source| WeightsError::Io {
        path: path.to_owned(),
        source,
    };
    let mut magic = [0u8; 9];
    let n =
        std::io::Read::read(&mut std::fs::File::open(path).map_err(io)?, &mut magic).map_err(io)?;
    let parse = |source| WeightsError::Parse {
        path: path.to_owned(),
        source,
    };
    let (tensors, metadata) = if n >= 4 && magic.starts_with(b"PK\x03\x04") {
        let entries = match candle_core::pickle::read_all_with_key(path, Some("state_dict")) {
            Ok(t) if !t.is_empty() => t,
            _ => candle_core::pickle::read_all_with_key(path, None).map_err(parse)?,
        };
        (entries.into_iter().collect::<Vec<_>>(), HashMap::new())
    } else if n == 9 && magic[8] == b'{' {
        let st = candle_core::safetensors::load(path, &Device::Cpu).map_err(parse)?;
        (
            st.into_iter().collect(),
            read_safetensors_metadata(path).map_err(io)?,
        )
    } else {
        return Err(WeightsError::UnknownFormat {
            path: path.to_owned(),
        });
    };
    let prefixed = !tensors.is_empty() && tensors.iter().all(|(k, _)| k.starts_with("module."));
    let tensors = tensors
        .into_iter()
        .map(|(k, t)| {
            let k = if prefixed {
                k["module.".len()..].to_owned()
            } else {
                k
            };
            (k, t)
        })
        .collect();
    Ok(Checkpoint { tensors, metadata })
}

/// The `__metadata__` map of a safetensors header (read without the data).
fn read_safetensors_metadata(path: &Path) -> std::io::Result<HashMap<String, String>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len).min(100 << 20) as usize;
    let mut header = vec![0u8; len];
    f.read_exact(&mut header)?;
    let value: serde_json::Value =
        serde_json::from_slice(&header).map_err(std::io::Error::other)?;
    Ok(value
        .get("__metadata__")
        .and_then(|m| serde_json::from_value(m.clone()).ok())
        .unwrap_or_default())
}

/// Derives the architecture from tensor shapes (and metadata where shapes are silent).
pub(crate) fn infer_config(ck: &Checkpoint) -> Result<ResUNetConfig, WeightsError> {
    let shape = |name: &str| -> Result<Vec<usize>, WeightsError> {
        ck.tensors
            .get(name)
            .map(|t| t.dims().to_vec())
            .ok_or_else(|| WeightsError::MissingTensor {
                name: name.to_owned(),
            })
    };
    let mut features = Vec::new();
    let mut in_channels = 0;
    while ck
        .tensors
        .contains_key(&format!("downs.{}.conv1.weight", features.len()))
    {
        let s = shape(&format!("downs.{}.conv1.weight", features.len()))?;
        if features.is_empty() {
            in_channels = s.get(1).copied().unwrap_or(0);
        }
        features.push(s[0]);
    }
    if features.is_empty() {
        return Err(WeightsError::MissingTensor {
            name: "downs.0.conv1.weight".into(),
        });
    }
    let out_channels = shape("final_conv.weight")?[0];
    let se_hidden = shape("downs.0.se.fc.0.weight")?[0];
    let meta = |key: &str, default: usize| -> Result<usize, WeightsError> {
        match ck.metadata.get(key) {
            None => Ok(default),
            Some(v) => v.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
                WeightsError::BadMetadata {
                    key: key.to_owned(),
                    value: v.clone(),
                }
            }),
        }
    };
    let defaults = ResUNetConfig::default();
    let cfg = ResUNetConfig {
        in_channels,
        out_channels,
        se_reduction: features[0] / se_hidden.max(1),
        gn_groups: meta(META_GN_GROUPS, defaults.gn_groups)?,
        input_size: meta(META_INPUT_SIZE, defaults.input_size)?,
        features,
    };
    // Validated by the caller, after any overrides of what shapes cannot tell.
    Ok(cfg)
}

/// Keys and shapes of one `ResidualBlock(i, o)` under prefix `p`.
fn block_shapes(
    out: &mut Vec<(String, Vec<usize>)>,
    cfg: &ResUNetConfig,
    p: &str,
    i: usize,
    o: usize,
) {
    let h = o / cfg.se_reduction;
    out.push((format!("{p}.conv1.weight"), vec![o, i, 3, 3]));
    out.push((format!("{p}.gn1.weight"), vec![o]));
    out.push((format!("{p}.gn1.bias"), vec![o]));
    out.push((format!("{p}.conv2.weight"), vec![o, o, 3, 3]));
    out.push((format!("{p}.gn2.weight"), vec![o]));
    out.push((format!("{p}.gn2.bias"), vec![o]));
    if i != o {
        out.push((format!("{p}.adjust_channels.weight"), vec![o, i, 1, 1]));
    }
    out.push((format!("{p}.se.fc.0.weight"), vec![h, o]));
    out.push((format!("{p}.se.fc.2.weight"), vec![o, h]));
}

/// Every state-dict key of the architecture with its shape, in PyTorch's
/// registration order (`ups`, `downs`, `attentions`, `bottleneck`, `final_conv`).
pub(crate) fn expected_shapes(cfg: &ResUNetConfig) -> Vec<(String, Vec<usize>)> {
    let mut ups = Vec::new();
    let mut gates = Vec::new();
    for (k, &f) in cfg.features.iter().rev().enumerate() {
        ups.push((format!("ups.{}.weight", 2 * k), vec![2 * f, f, 2, 2]));
        ups.push((format!("ups.{}.bias", 2 * k), vec![f]));
        block_shapes(&mut ups, cfg, &format!("ups.{}", 2 * k + 1), 2 * f, f);
        let h = f / 2;
        for (name, c_in, c_out) in [("W_g", f, h), ("W_x", f, h), ("psi", h, 1)] {
            let p = format!("attentions.{k}.{name}");
            gates.push((format!("{p}.0.weight"), vec![c_out, c_in, 1, 1]));
            gates.push((format!("{p}.0.bias"), vec![c_out]));
            for stat in ["weight", "bias", "running_mean", "running_var"] {
                gates.push((format!("{p}.1.{stat}"), vec![c_out]));
            }
        }
    }
    let mut downs = Vec::new();
    let mut c = cfg.in_channels;
    for (i, &f) in cfg.features.iter().enumerate() {
        block_shapes(&mut downs, cfg, &format!("downs.{i}"), c, f);
        c = f;
    }
    let mut out = ups;
    out.extend(downs);
    out.extend(gates);
    block_shapes(&mut out, cfg, "bottleneck", c, 2 * c);
    out.push((
        "final_conv.weight".into(),
        vec![cfg.out_channels, cfg.features[0], 1, 1],
    ));
    out.push(("final_conv.bias".into(), vec![cfg.out_channels]));
    out
}

/// Checks the checkpoint against the architecture and converts it to f32.
pub(crate) fn check_and_convert(
    ck: Checkpoint,
    cfg: &ResUNetConfig,
    device: &Device,
) -> Result<HashMap<String, Tensor>, WeightsError> {
    let expected = expected_shapes(cfg);
    let mut tensors = ck.tensors;
    let mut out = HashMap::with_capacity(expected.len());
    for (name, shape) in expected {
        let t = tensors
            .remove(&name)
            .ok_or_else(|| WeightsError::MissingTensor { name: name.clone() })?;
        if t.dims() != shape.as_slice() {
            return Err(WeightsError::ShapeMismatch {
                name,
                expected: shape,
                found: t.dims().to_vec(),
            });
        }
        out.insert(name, t.to_dtype(DType::F32)?.to_device(device)?);
    }
    let mut extra: Vec<_> = tensors
        .into_keys()
        .filter(|k| !k.ends_with(".num_batches_tracked"))
        .collect();
    extra.sort();
    if let Some(name) = extra.into_iter().next() {
        return Err(WeightsError::UnexpectedTensor { name });
    }
    Ok(out)
}

/// Writes `tensors` as safetensors with the architecture in the metadata.
pub(crate) fn save_safetensors(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    cfg: &ResUNetConfig,
    extra_metadata: &BTreeMap<String, String>,
) -> Result<(), WeightsError> {
    let mut meta: HashMap<String, String> = extra_metadata.clone().into_iter().collect();
    meta.insert("format".into(), "spheromesh-resunet".into());
    meta.insert(META_GN_GROUPS.into(), cfg.gn_groups.to_string());
    meta.insert(META_INPUT_SIZE.into(), cfg.input_size.to_string());
    meta.insert("features".into(), format!("{:?}", cfg.features));
    let mut sorted: Vec<(&String, Tensor)> = Vec::with_capacity(tensors.len());
    for (k, t) in tensors {
        sorted.push((
            k,
            t.to_dtype(DType::F32)?
                .to_device(&Device::Cpu)?
                .contiguous()?,
        ));
    }
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    safetensors::serialize_to_file(sorted, Some(meta), path).map_err(|e| WeightsError::Io {
        path: path.to_owned(),
        source: std::io::Error::other(e),
    })
}
