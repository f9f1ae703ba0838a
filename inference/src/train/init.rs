//! Seeded weight initialisation, so `spheromesh train` is reproducible (candle's
//! CPU device cannot be seeded). Convolutions and linears get a uniform
//! He-style init with variance `1/fan_in` (PyTorch's default scale, widened for
//! ReLU), biases zero, norm affine weights one, running statistics 0/1.

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::model::weights::{check_and_convert, expected_shapes, infer_config, read_checkpoint};
use crate::model::ResUNetConfig;

/// A `VarMap` holding every tensor of the architecture, drawn from `seed`.
pub(crate) fn seeded_varmap(
    cfg: &ResUNetConfig,
    seed: u64,
    device: &Device,
) -> candle_core::Result<VarMap> {
    let varmap = VarMap::new();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    {
        let mut data = varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("poisoned var map".into()))?;
        for (name, shape) in expected_shapes(cfg) {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = if shape.len() >= 2 {
                // ConvTranspose2d stores [in, out, k, k]; its fan-in is in*k*k / ... use out*k*k
                let fan_in = if name.starts_with("ups.") && shape.len() == 4 && shape[2] == 2 {
                    shape[1] * 4
                } else {
                    n / shape[0]
                };
                let bound = (3.0 / fan_in as f32).sqrt();
                (0..n).map(|_| rng.gen_range(-bound..bound)).collect()
            } else if name.ends_with("running_var")
                || (name.ends_with(".weight") && shape.len() == 1)
            {
                vec![1.0; n]
            } else {
                vec![0.0; n]
            };
            let var = Var::from_tensor(&Tensor::from_vec(values, shape, device)?)?;
            data.insert(name, var);
        }
    }
    Ok(varmap)
}

/// A `VarMap` holding the weights of an existing checkpoint, to continue
/// training it. The file must describe the same architecture as `cfg`.
pub(crate) fn varmap_from_file(
    cfg: &ResUNetConfig,
    path: &std::path::Path,
    device: &Device,
) -> Result<VarMap, super::TrainError> {
    let checkpoint = read_checkpoint(path)?;
    let found = infer_config(&checkpoint)?;
    if found.features != cfg.features
        || found.gn_groups != cfg.gn_groups
        || found.se_reduction != cfg.se_reduction
    {
        return Err(super::TrainError::Config(format!(
            "{} holds {found:?}, not the configured {cfg:?}",
            path.display()
        )));
    }
    let tensors = check_and_convert(checkpoint, cfg, device)?;
    let varmap = VarMap::new();
    {
        let mut data = varmap
            .data()
            .lock()
            .map_err(|_| super::TrainError::Config("poisoned var map".into()))?;
        for (name, t) in tensors {
            data.insert(name, Var::from_tensor(&t)?);
        }
    }
    Ok(varmap)
}
