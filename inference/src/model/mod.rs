//! The segmentation network: the SpherosegV4 ResUNet in candle, its weights
//! and the device it runs on. Callers hand in preprocessed pixels and get
//! probabilities back; no tensor leaves this module.

mod config;
mod conv;
mod device;
mod layers;
mod norm;
mod resunet;
mod upconv;
pub(crate) mod weights;
mod winograd;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Module, Tensor};
use candle_nn::VarBuilder;

pub use config::{InvalidConfig, ResUNetConfig};
pub use device::{DeviceError, DevicePreference};
pub(crate) use resunet::ResUNet;
pub use weights::WeightsError;

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The weights file is unreadable, malformed or does not fit the architecture.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The requested device is unavailable.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// Building the network failed.
    #[error("cannot build the network: {0}")]
    Build(#[from] candle_core::Error),
}

/// A loaded ResUNet ready for inference, shared read-only between threads.
#[derive(Debug, Clone)]
pub struct Model {
    net: ResUNet,
    config: ResUNetConfig,
    device: Device,
    /// The checked weights by state-dict key (storage shared with `net`).
    tensors: HashMap<String, Tensor>,
}

/// Architecture facts that tensor shapes cannot tell, for checkpoints that do
/// not carry them (PyTorch files): `None` keeps the file's metadata or the
/// old service's defaults (32 groups, 1024x1024 input).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArchOverrides {
    /// GroupNorm group count.
    pub gn_groups: Option<usize>,
    /// Network input side.
    pub input_size: Option<usize>,
}

impl Model {
    /// Loads weights from a safetensors or PyTorch checkpoint (strictly).
    ///
    /// # Errors
    /// [`LoadError`] naming the file problem, the missing/unexpected/mis-shaped
    /// tensor, or the unavailable device.
    pub fn load(path: &Path, preference: DevicePreference) -> Result<Self, LoadError> {
        Self::load_with_overrides(path, preference, ArchOverrides::default())
    }

    /// [`Model::load`] with architecture facts the file may lack.
    ///
    /// # Errors
    /// As [`Model::load`], plus an invalid override.
    pub fn load_with_overrides(
        path: &Path,
        preference: DevicePreference,
        overrides: ArchOverrides,
    ) -> Result<Self, LoadError> {
        let device = device::select_device(preference)?;
        let checkpoint = weights::read_checkpoint(path)?;
        let mut config = weights::infer_config(&checkpoint)?;
        if let Some(g) = overrides.gn_groups {
            config.gn_groups = g;
        }
        if let Some(s) = overrides.input_size {
            config.input_size = s;
        }
        config.validate().map_err(WeightsError::from)?;
        let tensors = weights::check_and_convert(checkpoint, &config, &device)?;
        Self::from_tensors(tensors, config, device)
    }

    /// Builds a model from named f32 tensors already checked against `config`.
    pub(crate) fn from_tensors(
        tensors: HashMap<String, Tensor>,
        config: ResUNetConfig,
        device: Device,
    ) -> Result<Self, LoadError> {
        let vb = VarBuilder::from_tensors(tensors.clone(), candle_core::DType::F32, &device);
        let net = ResUNet::new(&vb, &config)?;
        Ok(Self {
            net,
            config,
            device,
            tensors,
        })
    }

    /// The same weights run at another square input side (the network is
    /// fully convolutional; larger sides trade speed for boundary detail).
    ///
    /// # Errors
    /// [`InvalidConfig`] when `size` is not a positive multiple of `2^depth`.
    pub fn with_input_size(mut self, size: usize) -> Result<Self, InvalidConfig> {
        let config = ResUNetConfig {
            input_size: size,
            ..self.config.clone()
        };
        config.validate()?;
        self.config = config;
        Ok(self)
    }

    /// The architecture read from the weights.
    pub fn config(&self) -> &ResUNetConfig {
        &self.config
    }

    /// The device inference runs on ("cpu" or "cuda:0").
    pub fn device_name(&self) -> String {
        device::device_name(&self.device)
    }

    /// Whether inference runs on the CPU (not on a GPU).
    pub fn runs_on_cpu(&self) -> bool {
        self.device.is_cpu()
    }

    /// Logits `[B,1,S,S]` for a batch `[B,3,S,S]` laid out CHW per image.
    fn forward_batch(&self, pixels: &[f32], batch: usize) -> candle_core::Result<Tensor> {
        let s = self.config.input_size;
        let x = Tensor::from_slice(pixels, (batch, self.config.in_channels, s, s), &self.device)?;
        self.net.forward(&x)
    }

    /// Spheroid probability per network pixel (`S*S` values) for one CHW image.
    ///
    /// # Errors
    /// A tensor error (wrong input length, device failure).
    pub fn probabilities(&self, pixels: &[f32]) -> candle_core::Result<Vec<f32>> {
        let logits = self.forward_batch(pixels, 1)?;
        candle_nn::ops::sigmoid(&logits)?
            .flatten_all()?
            .to_vec1::<f32>()
    }

    /// Spheroid probability per network pixel, averaged over the eight symmetries of the
    /// square (flips and transposes; test-time augmentation), each output mapped back before
    /// averaging. On the CPU the eight passes run one view at a time (a batch of eight would
    /// hold eight sets of activations: 275 MB peak instead of 70 MB for a 1024x1024 image
    /// with the shipped model); on a GPU they run as one batch of eight, since there a small
    /// network is bound by kernel launches, not memory.
    ///
    /// # Errors
    /// A tensor error (wrong input length, device failure).
    pub fn probabilities_dihedral(&self, pixels: &[f32]) -> candle_core::Result<Vec<f32>> {
        self.dihedral_mean(pixels, !self.device.is_cpu())
    }

    /// [`Self::probabilities_dihedral`] with the eight views as one batch or one at a time.
    fn dihedral_mean(&self, pixels: &[f32], batched: bool) -> candle_core::Result<Vec<f32>> {
        let s = self.config.input_size;
        let c = self.config.in_channels;
        let plane = s * s;
        if pixels.len() != c * plane {
            candle_core::bail!("expected {} input values, got {}", c * plane, pixels.len());
        }
        let view_of = |t: usize, out: &mut Vec<f32>| {
            for ch in 0..c {
                let src = &pixels[ch * plane..(ch + 1) * plane];
                out.extend((0..plane).map(|i| src[dihedral(t, i / s, i % s, s)]));
            }
        };
        let mut mean = vec![0f32; plane];
        // Output pixel (y, x) of view t sits at dihedral(t, y, x) of the original.
        let mut accumulate = |t: usize, out: &[f32]| {
            for (i, &v) in out.iter().enumerate() {
                mean[dihedral(t, i / s, i % s, s)] += v / 8.0;
            }
        };
        if !batched {
            let mut view = Vec::with_capacity(pixels.len());
            for t in 0..8 {
                view.clear();
                view_of(t, &mut view);
                accumulate(t, &self.probabilities(&view)?);
            }
        } else {
            let mut batch = Vec::with_capacity(8 * pixels.len());
            for t in 0..8 {
                view_of(t, &mut batch);
            }
            let logits = self.forward_batch(&batch, 8)?;
            let probs = candle_nn::ops::sigmoid(&logits)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            for (t, out) in probs.chunks_exact(plane).enumerate() {
                accumulate(t, out);
            }
        }
        Ok(mean)
    }

    /// Raw network outputs (logits, `S*S` values) for one CHW image.
    ///
    /// # Errors
    /// A tensor error (wrong input length, device failure).
    pub fn logits(&self, pixels: &[f32]) -> candle_core::Result<Vec<f32>> {
        self.forward_batch(pixels, 1)?
            .flatten_all()?
            .to_vec1::<f32>()
    }

    /// Writes this model as safetensors (architecture in the metadata), e.g.
    /// to convert an old PyTorch checkpoint once.
    ///
    /// # Errors
    /// [`WeightsError::Io`] when the file cannot be written.
    pub fn save_safetensors(&self, path: &Path) -> Result<(), WeightsError> {
        weights::save_safetensors(path, &self.tensors, &self.config, &BTreeMap::new())
    }

    /// Saves named tensors as safetensors with the architecture in the metadata.
    pub(crate) fn save(
        path: &Path,
        tensors: &HashMap<String, Tensor>,
        config: &ResUNetConfig,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), WeightsError> {
        weights::save_safetensors(path, tensors, config, metadata)
    }
}

/// Index into an `s x s` plane of the source pixel shown at `(y, x)` in view `t` of the
/// eight symmetries of the square (bit 0: flip x, bit 1: flip y, bit 2: transpose).
fn dihedral(t: usize, y: usize, x: usize, s: usize) -> usize {
    let (mut y, mut x) = if t & 4 != 0 { (x, y) } else { (y, x) };
    if t & 1 != 0 {
        x = s - 1 - x;
    }
    if t & 2 != 0 {
        y = s - 1 - y;
    }
    y * s + x
}

#[cfg(test)]
mod dihedral_tests {
    use super::{dihedral, ResUNetConfig};

    /// The GPU's one-batch path averages the same eight views as the CPU's one-at-a-time path.
    #[test]
    fn batched_and_sequential_views_give_the_same_mean() {
        let cfg = ResUNetConfig {
            input_size: 64,
            ..ResUNetConfig::shipped()
        };
        let model = crate::test_utils::parity_model(&cfg);
        let pixels = crate::test_utils::parity_input(64, 64);
        let one_by_one = model.dihedral_mean(&pixels, false).unwrap();
        let batched = model.dihedral_mean(&pixels, true).unwrap();
        let diff = one_by_one
            .iter()
            .zip(&batched)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff < 1e-5, "max |diff| {diff}");
        assert_eq!(model.probabilities_dihedral(&pixels).unwrap(), one_by_one);
    }

    #[test]
    fn each_view_is_a_permutation_and_the_identity_is_first() {
        let s = 5;
        for t in 0..8 {
            let mut seen: Vec<usize> = (0..s * s).map(|i| dihedral(t, i / s, i % s, s)).collect();
            if t == 0 {
                assert!(seen.iter().enumerate().all(|(i, &j)| i == j));
            }
            seen.sort_unstable();
            assert!(seen.iter().enumerate().all(|(i, &j)| i == j), "view {t}");
        }
        // On a 2x2 plane the eight views are eight different permutations.
        let views: std::collections::HashSet<Vec<usize>> = (0..8)
            .map(|t| (0..4).map(|i| dihedral(t, i / 2, i % 2, 2)).collect())
            .collect();
        assert_eq!(
            views.len(),
            8,
            "the eight symmetries of a square are distinct"
        );
    }
}

/// Largest absolute difference between two tensors of one shape (kernel tests).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar())
        .expect("comparable tensors")
}

#[cfg(test)]
mod fused_kernel_tests {
    use candle_core::{Device, Module, Tensor, Var};

    use super::ResUNetConfig;

    /// A network whose 128-, 64- and 32-pixel levels take the Winograd kernel and whose
    /// deeper levels take im2col, with its parity input.
    fn network() -> (super::Model, Tensor) {
        let cfg = ResUNetConfig {
            features: vec![32, 64, 128, 256, 512],
            gn_groups: 8,
            input_size: 128,
            ..ResUNetConfig::default()
        };
        let model = crate::test_utils::parity_model(&cfg);
        let input = crate::test_utils::parity_input(128, 128);
        let x = Tensor::from_vec(input, (1, 3, 128, 128), &Device::Cpu).unwrap();
        (model, x)
    }

    /// With more threads than blocks or tiles, a thread waiting on a parallel gemm runs
    /// other queued tiles; no kernel may hold a thread-local scratch borrow across that
    /// (it panicked with "RefCell already borrowed" on a 16-core host).
    #[test]
    fn kernels_run_in_a_pool_with_more_threads_than_work() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(16)
            .build()
            .unwrap();
        // im2col: 1024 input channels at width 32 make tiles of 3 rows, 11 of them.
        let x = Tensor::randn(0f32, 1.0, (1, 1024, 32, 32), &Device::Cpu).unwrap();
        let w = Tensor::randn(0f32, 0.05, (64, 1024, 3, 3), &Device::Cpu).unwrap();
        // Winograd: 64 -> 64 channels at 192x192 make 6 blocks of 8 tile rows.
        let xw = Tensor::randn(0f32, 1.0, (1, 64, 192, 192), &Device::Cpu).unwrap();
        let ww: Vec<f32> = Tensor::randn(0f32, 0.05, (64, 64, 3, 3), &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let kernel = super::winograd::WinogradKernel::new(&ww, 64, 64);
        let xw_flat: Vec<f32> = xw.flatten_all().unwrap().to_vec1().unwrap();
        let expected = super::conv::conv2d_same(&x, &w).unwrap();
        let expected_w = super::winograd::conv3x3(&xw_flat, 1, 192, 192, &kernel);
        for _ in 0..5 {
            let got = pool.install(|| super::conv::conv2d_same(&x, &w)).unwrap();
            assert!(super::max_abs_diff(&got, &expected) < 1e-4);
            let got_w = pool.install(|| super::winograd::conv3x3(&xw_flat, 1, 192, 192, &kernel));
            assert_eq!(got_w, expected_w);
        }
        let (model, x) = network();
        let expected = model.net.forward(&x).unwrap();
        let got = pool.install(|| model.net.forward(&x)).unwrap();
        assert!(super::max_abs_diff(&got, &expected) < 1e-4);
    }

    /// The inference-only CPU kernels (Winograd 3x3, GroupNorm+ReLU, 2x2 up-convolution)
    /// compute what the differentiable candle ops compute: the same network on the same
    /// input, once plain and once gradient-tracked (which routes every layer to candle's ops).
    #[test]
    fn fused_inference_kernels_match_the_differentiable_path() {
        let (model, x) = network();
        let fused = model.net.forward(&x).unwrap();
        let tracked = Var::from_tensor(&x).unwrap();
        let reference = model.net.forward(tracked.as_tensor()).unwrap();
        let diff = super::max_abs_diff(&fused, &reference);
        let scale = super::max_abs_diff(&reference, &reference.zeros_like().unwrap()).max(1.0);
        assert!(
            diff <= 1e-4 * scale,
            "fused vs candle ops: max |diff| {diff} (output scale {scale})"
        );
    }
}
