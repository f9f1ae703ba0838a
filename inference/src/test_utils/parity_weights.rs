//! Deterministic ResUNet weights and input shared with the PyTorch reference.
//!
//! Implements formula `parity-v2`, defined in `tools/parity/resunet_torch.py`, bit for bit:
//! the same f64 operations in the same order, rounded once to f32. Both sides use the
//! platform `sin`/`cos` (glibc on Linux), so the values are expected to be identical, not
//! just close. The PyTorch output for these weights is in
//! `inference/tests/fixtures/parity/` (see `tools/parity/make_fixture.py`).
//!
//! For a state-dict entry `name` with shape `shape` and `n` elements, index `i` in row-major
//! order:
//!
//! ```text
//! h        = fnv1a32(utf8(name))                       (offset 2166136261, prime 16777619)
//! phase    = (h % 10007) / 10007 * 2 * pi
//! t        = sin(phase + 12.9898 * i + 78.233) * 43758.5453
//! base[i]  = 2 * (t - floor(t)) - 1
//! value[i] = f32(base[i] * (1.5 / sqrt(n / shape[0])))   ndim >= 2 (conv, conv-T, linear)
//!          | f32(0.1 * base[i])                        name ends ".bias"
//!          | f32(1 + 0.2 * base[i])                    other 1-d ".weight" (norm affine)
//!          | f32(0.1 * base[i])                        ".running_mean"
//!          | f32(1 + 0.3 * base[i])                    ".running_var"
//! ".num_batches_tracked"                               int64 scalar 0
//! ```

use std::collections::HashMap;
use std::f64::consts::PI;

use candle_core::{Device, Tensor};

use super::pth_writer::PthTensor;

/// Formula name recorded in the fixture's `meta.json` (`"formula"`).
pub const FORMULA_VERSION: &str = "parity-v2";

/// Squeeze-excitation reduction of the ResUNet (`hidden = channels / 16`).
const SE_REDUCTION: usize = 16;

/// FNV-1a 32-bit hash of `bytes`.
fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(2_166_136_261_u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    })
}

/// The `parity-v2` values of one state-dict entry, row-major.
///
/// `name` is the PyTorch key without a `module.` prefix. A `.num_batches_tracked` entry
/// (an int64 scalar in PyTorch) gives `[0.0]`; use [`parity_tensor`] to get it as the
/// int64 it really is.
///
/// # Panics
///
/// If a 0-d or 1-d entry's name has none of the suffixes the formula knows.
pub fn parity_value(name: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    if name.ends_with(".num_batches_tracked") {
        return vec![0.0; n];
    }
    let phase = f64::from(fnv1a32(name.as_bytes()) % 10_007) / 10_007.0 * 2.0 * PI;
    let base = |i: usize| {
        let i = i as f64;
        let t = (phase + 12.9898 * i + 78.233).sin() * 43758.5453;
        2.0 * (t - t.floor()) - 1.0
    };
    // value = offset + scale * base, with the addition skipped where the formula has none,
    // so each rule performs exactly the Python expression's operations (multiplication
    // commutes exactly in IEEE arithmetic) and the rounded f32 values agree.
    let (offset, scale) = if shape.len() >= 2 {
        (None, 1.5 / (n as f64 / shape[0] as f64).sqrt())
    } else if name.ends_with(".bias") || name.ends_with(".running_mean") {
        (None, 0.1)
    } else if name.ends_with(".weight") {
        (Some(1.0), 0.2)
    } else if name.ends_with(".running_var") {
        (Some(1.0), 0.3)
    } else {
        panic!("no parity-v2 rule for {name:?} with shape {shape:?}")
    };
    (0..n)
        .map(|i| {
            let v = scale * base(i);
            offset.map_or(v, |o| o + v) as f32
        })
        .collect()
}

/// The entry `name` as the tensor PyTorch holds: int64 0 for `.num_batches_tracked`,
/// [`parity_value`] as f32 otherwise.
///
/// # Panics
///
/// As [`parity_value`].
pub fn parity_tensor(name: &str, shape: &[usize]) -> PthTensor {
    if name.ends_with(".num_batches_tracked") {
        PthTensor::I64Scalar(0)
    } else {
        PthTensor::F32 {
            shape: shape.to_vec(),
            data: parity_value(name, shape),
        }
    }
}

/// The parity input, `[1, 3, h, w]` row-major: `x[i] = f32(0.5 + 0.5 * sin(0.1 i) * cos(0.013 i))`.
pub fn parity_input(h: usize, w: usize) -> Vec<f32> {
    (0..3 * h * w)
        .map(|i| {
            let i = i as f64;
            (0.5 + 0.5 * (0.1 * i).sin() * (0.013 * i).cos()) as f32
        })
        .collect()
}

/// Every state-dict key of `ResUNet(in_ch, out_ch, features)` with its shape, in the order
/// PyTorch's `state_dict()` lists them: `ups.*`, `downs.*`, `attentions.*`, `bottleneck.*`,
/// `final_conv.*` (the old model registers `ups` first). BatchNorm running statistics and
/// `num_batches_tracked` (shape `[]`) are included. Keys carry no `module.` prefix.
///
/// # Panics
///
/// If `features` is empty.
pub fn resunet_state_dict_shapes(
    features: &[usize],
    in_ch: usize,
    out_ch: usize,
) -> Vec<(String, Vec<usize>)> {
    assert!(
        !features.is_empty(),
        "ResUNet needs at least one feature level"
    );
    let cfg = crate::ResUNetConfig {
        in_channels: in_ch,
        out_channels: out_ch,
        features: features.to_vec(),
        se_reduction: SE_REDUCTION,
        ..crate::ResUNetConfig::default()
    };
    // The loader's table, plus the counters PyTorch keeps after each BatchNorm.
    let mut out = Vec::new();
    for (name, shape) in crate::model::weights::expected_shapes(&cfg) {
        let counter = name
            .strip_suffix(".running_var")
            .map(|p| format!("{p}.num_batches_tracked"));
        out.push((name, shape));
        if let Some(counter) = counter {
            out.push((counter, vec![]));
        }
    }
    out
}

/// [`resunet_state_dict_shapes`] with every entry filled by [`parity_tensor`].
pub fn resunet_parity_state_dict(
    features: &[usize],
    in_ch: usize,
    out_ch: usize,
) -> Vec<(String, PthTensor)> {
    resunet_state_dict_shapes(features, in_ch, out_ch)
        .into_iter()
        .map(|(name, shape)| {
            let tensor = parity_tensor(&name, &shape);
            (name, tensor)
        })
        .collect()
}

/// [`resunet_parity_state_dict`] as candle tensors on `device`, keyed without prefix, for
/// `candle_nn::VarBuilder::from_tensors`. `num_batches_tracked` is a 0-d `I64` tensor.
///
/// # Errors
///
/// If candle cannot create a tensor on `device`.
pub fn resunet_parity_tensors(
    features: &[usize],
    in_ch: usize,
    out_ch: usize,
    device: &Device,
) -> candle_core::Result<HashMap<String, Tensor>> {
    resunet_parity_state_dict(features, in_ch, out_ch)
        .into_iter()
        .map(|(name, tensor)| {
            let t = match tensor {
                PthTensor::F32 { shape, data } => Tensor::from_vec(data, shape, device)?,
                PthTensor::I64Scalar(v) => Tensor::new(v, device)?,
            };
            Ok((name, t))
        })
        .collect()
}

/// A CPU [`Model`](crate::Model) of architecture `cfg` whose every weight is its `parity-v2`
/// value ([`parity_value`]): a stand-in with realistic activations for benchmarks and tests
/// that need a network of a given shape but no trained weights (the cost of a forward pass
/// does not depend on the weight values).
///
/// Unlike [`resunet_parity_tensors`], which fixes the squeeze-excitation reduction at the
/// original 16, the keys and shapes come from the loader's own table for `cfg`, so any valid
/// configuration works (e.g. [`ResUNetConfig::shipped`](crate::ResUNetConfig::shipped) with
/// reduction 4). BatchNorm `num_batches_tracked` counters are left out, as the loader drops them.
///
/// # Panics
///
/// If `cfg` is invalid ([`ResUNetConfig::validate`](crate::ResUNetConfig::validate)) or
/// candle cannot allocate the tensors.
pub fn parity_model(cfg: &crate::ResUNetConfig) -> crate::Model {
    if let Err(e) = cfg.validate() {
        panic!("parity_model: {e}");
    }
    let device = Device::Cpu;
    let tensors: candle_core::Result<HashMap<String, Tensor>> =
        crate::model::weights::expected_shapes(cfg)
            .into_iter()
            .map(|(name, shape)| {
                let t = Tensor::from_vec(parity_value(&name, &shape), shape, &device)?;
                Ok((name, t))
            })
            .collect();
    let tensors = tensors.unwrap_or_else(|e| panic!("parity_model: cannot create tensors: {e}"));
    crate::model::Model::from_tensors(tensors, cfg.clone(), device)
        .unwrap_or_else(|e| panic!("parity_model: cannot build {:?}: {e}", cfg.features))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a32_matches_reference_vectors() {
        // Published FNV-1a test vectors.
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn original_resunet_has_contract_parameter_count() {
        // backend-contract.md section 5: 132,238,512 parameters. Running statistics and
        // num_batches_tracked are buffers, not parameters.
        let params: usize = resunet_state_dict_shapes(&[64, 128, 256, 512, 1024], 3, 1)
            .iter()
            .filter(|(name, _)| {
                !name.ends_with(".running_mean")
                    && !name.ends_with(".running_var")
                    && !name.ends_with(".num_batches_tracked")
            })
            .map(|(_, shape)| shape.iter().product::<usize>())
            .sum();
        assert_eq!(params, 132_238_512);
    }

    #[test]
    fn key_order_follows_module_registration() {
        let shapes = resunet_state_dict_shapes(&[16, 32], 3, 1);
        // ups: 2 x (conv-T 2 + block 9); downs: 2 x 9; attentions: 2 x 21; bottleneck 9; final 2.
        assert_eq!(shapes.len(), 22 + 18 + 42 + 9 + 2);
        assert_eq!(shapes[0], ("ups.0.weight".into(), vec![64, 32, 2, 2]));
        assert_eq!(shapes.last().map(|s| s.0.as_str()), Some("final_conv.bias"));
        let nbt = shapes
            .iter()
            .find(|(n, _)| n == "attentions.0.psi.1.num_batches_tracked");
        assert_eq!(nbt.map(|s| s.1.len()), Some(0));
    }

    #[test]
    fn values_follow_the_rules() {
        assert_eq!(parity_value("x.num_batches_tracked", &[]), vec![0.0]);
        let var = parity_value("a.1.running_var", &[4]);
        assert!(var.iter().all(|v| (0.7..=1.3).contains(v)));
        let conv = parity_value("a.conv1.weight", &[2, 8, 3, 3]);
        let bound = 1.5 / (72.0_f32).sqrt();
        assert!(conv.iter().all(|v| v.abs() <= bound));
        assert_eq!(parity_input(2, 2)[0], 0.5);
    }
}
