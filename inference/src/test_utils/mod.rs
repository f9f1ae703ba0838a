//! Helpers for tests, behind the `test-utils` feature.
//!
//! * [`parity_value`] / [`parity_input`]: the deterministic ResUNet weights and input
//!   (formula `parity-v2`) that `tools/parity/make_fixture.py` feeds to the PyTorch
//!   reference; its output is committed in `inference/tests/fixtures/parity/`, so a
//!   candle forward pass on the same weights can be compared without shipping weights.
//! * [`parity_model`]: a [`Model`](crate::Model) of any architecture with those weights, for
//!   benchmarks (`benches/inference.rs`) and tests that need a network but no training.
//! * [`resunet_state_dict_shapes`]: every key and shape of the old service's `state_dict`,
//!   in PyTorch order.
//! * [`write_pth`]: writes PyTorch's `torch.save` zip format (bare state dict or a
//!   `{"state_dict": {"module." + k: v}, "epoch": 9}` checkpoint like
//!   `checkpoint_epoch_9.pth.tar`), so the `.pth` loading path is tested without Python.
//!
//! This follows iroh's `test_utils` module: shared by unit and integration tests, never part
//! of a release build.

mod parity_weights;
mod pth_writer;

pub use parity_weights::{
    parity_input, parity_model, parity_tensor, parity_value, resunet_parity_state_dict,
    resunet_parity_tensors, resunet_state_dict_shapes, FORMULA_VERSION,
};
pub use pth_writer::{write_pth, PthTensor, PthWrap, WritePthError};
