//! spheromesh segmentation engine: everything a node does with an image.
//!
//! Image bytes go in, SpherosegV4 polygons come out ([`Segmenter`]); no caller
//! sees a tensor. The network is the SpherosegV4 ResUNet in candle
//! ([`Model`]), loading the old service's PyTorch checkpoints and our own
//! safetensors. [`synth`] generates training data, [`train`] fits our model
//! and [`eval`] measures it against a classical baseline.
#![deny(missing_docs, unreachable_pub)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod allocator;
mod decode;
pub mod eval;
mod model;
mod overlay;
pub mod postprocess;
mod preprocess;
mod resample;
mod segment;
pub mod synth;
#[cfg(feature = "test-utils")]
pub mod test_utils;
pub mod train;

pub use allocator::{keep_freed_memory_for_reuse, HugePageAllocator};
pub use decode::{decode_dynamic, decode_rgb8, probe_format, to_rgb8, DecodeError, DecodeLimits};
pub use model::{
    ArchOverrides, DeviceError, DevicePreference, InvalidConfig, LoadError, Model, ResUNetConfig,
    WeightsError,
};
pub use overlay::render_overlay;
pub use preprocess::to_model_input;
pub use segment::{
    SegmentError, SegmentOptions, Segmentation, Segmenter, StageTimings, Upsample, DEFAULT_MIN_PEAK,
};
