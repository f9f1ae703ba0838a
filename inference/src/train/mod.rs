//! Training our ResUNet from scratch on synthetic micrographs ([`crate::synth`]).
//!
//! AdamW (Loshchilov & Hutter, 2019) with linear warm-up and cosine decay,
//! BCE + soft-Dice loss, batches drawn with replacement from a pool rendered
//! once at the network resolution, dihedral augmentation. Everything random
//! is seeded, so a run is reproducible up to floating-point summation order
//! on the rayon pool. BatchNorm running statistics (attention gates) stay at
//! 0/1 and are not optimised (see `model/layers.rs`).

mod data;
mod init;
mod loss;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::model::{Model, ResUNet, ResUNetConfig, WeightsError};
use crate::synth;

/// Everything that determines a training run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Architecture to train.
    pub model: ResUNetConfig,
    /// Seed of the initial weights and of batch sampling.
    pub seed: u64,
    /// First synthetic sample seed of the training pool (evaluation uses a disjoint range).
    pub data_seed: u64,
    /// Number of synthetic samples rendered into the pool.
    pub pool_size: usize,
    /// Version of the synthetic generator that renders the pool.
    pub generator: synth::Generator,
    /// No-spheroid scenes (generator v2's [`synth::generate_empty`]) appended to the pool, from seed
    /// `data_seed + pool_size` on; needs generator v2 (0: none beyond the generator's own share).
    pub extra_empty: usize,
    /// Optimiser steps.
    pub steps: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Side of the random training crops cut from the network-size images
    /// (a multiple of 32, at most `model.input_size`).
    pub crop_size: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Second phase: steps on whole network-size images (no crop), so that
    /// GroupNorm and squeeze-excitation statistics match inference, as cosine
    /// cycles with warm restarts (SGDR, Loshchilov & Hutter 2017): each entry
    /// is one cycle's length, starting again from `finetune_learning_rate`.
    pub finetune_cycles: Vec<usize>,
    /// Images per second-phase step.
    pub finetune_batch_size: usize,
    /// Peak learning rate of the second phase (cosine-decayed over it).
    pub finetune_learning_rate: f64,
    /// Start from these weights (safetensors of the same architecture)
    /// instead of the seeded initialisation.
    pub init: Option<PathBuf>,
    /// Write the weights every this many steps (0: only at the end).
    pub checkpoint_every: usize,
    /// Where the safetensors go.
    pub output: PathBuf,
}

impl TrainConfig {
    /// The first stage of the shipped model's recipe (`models/README.md`): from scratch on generator v1.
    pub fn shipped(output: PathBuf) -> Self {
        Self {
            model: ResUNetConfig::shipped(),
            seed: 20261127,
            data_seed: TRAIN_DATA_SEED,
            pool_size: 1200,
            generator: synth::Generator::V1,
            extra_empty: 0,
            steps: 1400,
            batch_size: 8,
            crop_size: 128,
            learning_rate: 3e-3,
            warmup_steps: 100,
            weight_decay: 1e-4,
            finetune_cycles: vec![300, 400, 400, 400],
            finetune_batch_size: 4,
            finetune_learning_rate: 5e-4,
            init: None,
            checkpoint_every: 200,
            output,
        }
    }
}

impl TrainConfig {
    /// The second stage of the shipped model's recipe: whole-image cycles on generator v2's data, a fresh pool
    /// (seeds [`V2_DATA_SEED`]..), starting from the first stage's weights in `init`.
    pub fn shipped_v2(init: PathBuf, output: PathBuf) -> Self {
        Self {
            data_seed: V2_DATA_SEED,
            pool_size: 1600,
            generator: synth::Generator::V2,
            steps: 0,
            warmup_steps: 1,
            finetune_cycles: vec![600, 600, 600],
            seed: 20261207,
            init: Some(init),
            ..Self::shipped(output)
        }
    }

    /// Images in the pool: the generator's draws plus the extra no-spheroid scenes.
    pub fn pool_len(&self) -> usize {
        self.pool_size + self.extra_empty
    }

    /// Seeds the pool renders: `data_seed..data_seed + pool_len()`.
    pub fn pool_seeds(&self) -> std::ops::Range<u64> {
        self.data_seed..self.data_seed + self.pool_len() as u64
    }

    /// Total steps of the whole-image phase.
    pub fn finetune_steps(&self) -> usize {
        self.finetune_cycles.iter().sum()
    }
}

/// First synthetic seed of the shipped model's training pool. Evaluation
/// seeds must lie outside `TRAIN_DATA_SEED..TRAIN_DATA_SEED + pool_size`.
pub const TRAIN_DATA_SEED: u64 = 1_000_000;

/// First seed of the second stage's generator-v2 pool; like the first pool, inside
/// `TRAIN_DATA_SEED..TRAIN_DATA_SEED + 1_000_000`, which evaluation avoids.
pub const V2_DATA_SEED: u64 = 1_100_000;

/// What the caller is told as training goes.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TrainEvent {
    /// `done` of `total` pool samples rendered.
    Pool {
        /// Rendered so far.
        done: usize,
        /// Pool size.
        total: usize,
    },
    /// One optimiser step finished.
    Step {
        /// 1-based step number.
        step: usize,
        /// Total steps.
        total: usize,
        /// Loss of this batch.
        loss: f32,
        /// Learning rate used.
        lr: f64,
    },
    /// Weights written to the output file.
    Checkpoint {
        /// Step at which they were written.
        step: usize,
    },
}

/// Summary of a finished run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    /// Mean loss over the last 50 steps.
    pub final_loss: f32,
    /// Time spent rendering the pool.
    pub pool_time: Duration,
    /// Time spent in optimiser steps.
    pub train_time: Duration,
}

/// Why training failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// The configuration cannot work.
    #[error("invalid training config: {0}")]
    Config(String),
    /// A tensor operation failed.
    #[error("training step failed: {0}")]
    Tensor(#[from] candle_core::Error),
    /// Weights could not be read (`init`) or written.
    #[error(transparent)]
    Weights(#[from] WeightsError),
}

/// The schedule over both phases: warm-up + cosine over the crop phase, then
/// a fresh cosine from `finetune_learning_rate` over the whole-image phase.
fn learning_rate(cfg: &TrainConfig, step: usize) -> f64 {
    if step >= cfg.steps {
        let mut pos = step - cfg.steps;
        let mut len = 1;
        for &cycle in &cfg.finetune_cycles {
            len = cycle.max(1);
            if pos < cycle {
                break;
            }
            pos -= cycle;
        }
        let progress = pos as f64 / len as f64;
        let (peak, floor) = (
            cfg.finetune_learning_rate,
            0.02 * cfg.finetune_learning_rate,
        );
        return floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    }
    if step < cfg.warmup_steps {
        return cfg.learning_rate * (step + 1) as f64 / cfg.warmup_steps as f64;
    }
    let progress = (step - cfg.warmup_steps) as f64 / (cfg.steps - cfg.warmup_steps).max(1) as f64;
    let floor = 0.02 * cfg.learning_rate;
    floor + (cfg.learning_rate - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Trains a model from scratch and writes it to `cfg.output` as safetensors.
///
/// # Errors
/// [`TrainError`] for a bad configuration, a failed step or a failed write.
pub fn train(
    cfg: &TrainConfig,
    on_event: &(dyn Fn(TrainEvent) + Sync),
) -> Result<TrainReport, TrainError> {
    cfg.model
        .validate()
        .map_err(|e| TrainError::Config(e.to_string()))?;
    let stride = 1usize << cfg.model.features.len();
    if cfg.crop_size == 0
        || !cfg.crop_size.is_multiple_of(stride)
        || cfg.crop_size > cfg.model.input_size
    {
        return Err(TrainError::Config(format!(
            "crop_size {} must be a positive multiple of {stride} no larger than input_size {}",
            cfg.crop_size, cfg.model.input_size
        )));
    }
    if cfg.steps + cfg.finetune_steps() == 0
        || cfg.batch_size == 0
        || cfg.finetune_batch_size == 0
        || cfg.pool_size == 0
    {
        return Err(TrainError::Config(
            "steps (of either phase), batch sizes and pool_size must be positive".into(),
        ));
    }
    for (name, lr) in [
        ("learning_rate", cfg.learning_rate),
        ("finetune_learning_rate", cfg.finetune_learning_rate),
    ] {
        if !(lr.is_finite() && lr > 0.0) {
            return Err(TrainError::Config(format!(
                "{name} must be finite and > 0, got {lr}"
            )));
        }
    }
    if cfg.extra_empty > 0 && cfg.generator != synth::Generator::V2 {
        return Err(TrainError::Config(
            "extra_empty needs generator v2 (v1 has no scenes without spheroids)".into(),
        ));
    }
    let device = Device::Cpu;
    let s = cfg.model.input_size;
    let t0 = Instant::now();
    let total = cfg.pool_len();
    let pool = data::build_pool(
        cfg.generator,
        cfg.data_seed,
        (cfg.pool_size, cfg.extra_empty),
        s as u32,
        &|done| on_event(TrainEvent::Pool { done, total }),
    );
    let pool_time = t0.elapsed();

    let varmap = match &cfg.init {
        Some(path) => init::varmap_from_file(&cfg.model, path, &device)?,
        None => init::seeded_varmap(&cfg.model, cfg.seed, &device)?,
    };
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let net = ResUNet::new(&vb, &cfg.model)?;
    let trainable: Vec<_> = {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| TrainError::Config("poisoned var map".into()))?;
        let mut named: Vec<_> = data
            .iter()
            .filter(|(k, _)| !k.contains(".running_"))
            .collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        named.into_iter().map(|(_, v)| v.clone()).collect()
    };
    let params = ParamsAdamW {
        lr: cfg.learning_rate,
        weight_decay: cfg.weight_decay,
        ..Default::default()
    };
    let mut opt = AdamW::new(trainable, params)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut recent = std::collections::VecDeque::with_capacity(50);
    let t1 = Instant::now();
    let total_steps = cfg.steps + cfg.finetune_steps();
    for step in 0..total_steps {
        let lr = learning_rate(cfg, step);
        opt.set_learning_rate(lr);
        let (c, b) = if step < cfg.steps {
            (cfg.crop_size, cfg.batch_size)
        } else {
            (s, cfg.finetune_batch_size)
        };
        let (px, tg) = data::sample_batch(&pool, b, s, c, &mut rng);
        let x = Tensor::from_vec(px, (b, 3, c, c), &device)?;
        let t = Tensor::from_vec(tg, (b, 1, c, c), &device)?;
        let loss = loss::segmentation_loss(&net.forward(&x)?, &t)?;
        opt.backward_step(&loss)?;
        let loss: f32 = loss.to_scalar()?;
        if recent.len() == 50 {
            recent.pop_front();
        }
        recent.push_back(loss);
        on_event(TrainEvent::Step {
            step: step + 1,
            total: total_steps,
            loss,
            lr,
        });
        let last = step + 1 == total_steps;
        if last || (cfg.checkpoint_every > 0 && (step + 1) % cfg.checkpoint_every == 0) {
            save(cfg, &varmap, step + 1)?;
            on_event(TrainEvent::Checkpoint { step: step + 1 });
        }
    }
    let final_loss = recent.iter().sum::<f32>() / recent.len().max(1) as f32;
    Ok(TrainReport {
        final_loss,
        pool_time,
        train_time: t1.elapsed(),
    })
}

fn save(cfg: &TrainConfig, varmap: &VarMap, step: usize) -> Result<(), TrainError> {
    let tensors = {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| TrainError::Config("poisoned var map".into()))?;
        data.iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect()
    };
    let mut meta = BTreeMap::new();
    meta.insert("trained_steps".into(), step.to_string());
    meta.insert("train_seed".into(), cfg.seed.to_string());
    meta.insert("train_data_seed".into(), format!("{:?}", cfg.pool_seeds()));
    meta.insert("extra_empty".into(), cfg.extra_empty.to_string());
    meta.insert("batch_size".into(), cfg.batch_size.to_string());
    meta.insert("crop_size".into(), cfg.crop_size.to_string());
    meta.insert(
        "finetune_cycles".into(),
        format!("{:?}", cfg.finetune_cycles),
    );
    meta.insert(
        "finetune_batch_size".into(),
        cfg.finetune_batch_size.to_string(),
    );
    meta.insert("learning_rate".into(), cfg.learning_rate.to_string());
    let tmp = cfg.output.with_extension("safetensors.partial");
    Model::save(&tmp, &tensors, &cfg.model, &meta)?;
    std::fs::rename(&tmp, &cfg.output).map_err(|source| WeightsError::Io {
        path: cfg.output.clone(),
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_decays_and_restarts_each_finetune_cycle() {
        let cfg = TrainConfig::shipped("unused".into());
        assert!(learning_rate(&cfg, 0) < learning_rate(&cfg, cfg.warmup_steps - 1));
        assert!(
            (learning_rate(&cfg, cfg.warmup_steps) - cfg.learning_rate).abs()
                < 1e-3 * cfg.learning_rate
        );
        assert!(learning_rate(&cfg, cfg.steps - 1) < 0.05 * cfg.learning_rate);
        let first = cfg.finetune_cycles[0];
        assert_eq!(learning_rate(&cfg, cfg.steps), cfg.finetune_learning_rate);
        assert!(learning_rate(&cfg, cfg.steps + first - 1) < 0.05 * cfg.finetune_learning_rate);
        assert_eq!(
            learning_rate(&cfg, cfg.steps + first),
            cfg.finetune_learning_rate
        );
        assert_eq!(
            cfg.finetune_steps(),
            cfg.finetune_cycles.iter().sum::<usize>()
        );
    }

    #[test]
    fn bad_configs_are_refused_before_any_work() {
        let mut cfg = TrainConfig::shipped("unused".into());
        cfg.crop_size = 100;
        assert!(matches!(train(&cfg, &|_| {}), Err(TrainError::Config(_))));
        let mut cfg = TrainConfig::shipped("unused".into());
        cfg.steps = 0;
        cfg.finetune_cycles.clear();
        assert!(matches!(train(&cfg, &|_| {}), Err(TrainError::Config(_))));
        let mut cfg = TrainConfig::shipped("unused".into());
        cfg.finetune_learning_rate = f64::NAN;
        assert!(
            matches!(train(&cfg, &|_| {}), Err(TrainError::Config(m)) if m.contains("finetune_learning_rate"))
        );
        let mut cfg = TrainConfig::shipped("unused".into());
        cfg.extra_empty = 10;
        assert!(
            matches!(train(&cfg, &|_| {}), Err(TrainError::Config(m)) if m.contains("extra_empty"))
        );
    }

    #[test]
    fn pool_seeds_cover_the_draws_and_the_extra_empty_scenes() {
        let mut cfg = TrainConfig::shipped_v2("unused".into(), "unused".into());
        assert_eq!(cfg.pool_seeds(), V2_DATA_SEED..V2_DATA_SEED + 1600);
        cfg.extra_empty = 400;
        assert_eq!(cfg.pool_seeds(), V2_DATA_SEED..V2_DATA_SEED + 2000);
    }
}
