//! Loading weights in every form a user has, and parity with PyTorch.
//!
//! Equivalent PyTorch code (tools/parity/make_fixture.py):
//! ```python
//! model = ResUNet(3, 1, features=[16, 32, 64, 128, 256], gn_groups=8).eval()
//! fill_parity_weights(model)            # formula parity-v2, no weights committed
//! expected = model(parity_input(64, 64))  # -> tests/fixtures/parity/expected_logits.f32
//! ```
//! Here the same weights are rebuilt in Rust, written as a real `torch.save`
//! zip checkpoint (`{"state_dict": {"module." + k: v}, "epoch": 9}`, like the
//! old service's `checkpoint_epoch_9.pth.tar`), loaded through
//! `Model::load` and run.

use std::path::{Path, PathBuf};

use spheromesh_inference::test_utils::{
    parity_input, resunet_parity_state_dict, write_pth, PthTensor, PthWrap,
};
use spheromesh_inference::{ArchOverrides, DevicePreference, LoadError, Model, WeightsError};

const FEATURES: [usize; 5] = [16, 32, 64, 128, 256];
const SIDE: usize = 64;
/// The issue's bound on the logit difference against PyTorch.
const TOLERANCE: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parity")
        .join(name)
}

fn expected_logits() -> Vec<f32> {
    let bytes = std::fs::read(fixture("expected_logits.f32")).expect("fixture");
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn gn_groups_from_meta() -> usize {
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("meta.json")).expect("meta")).expect("json");
    meta["gn_groups"].as_u64().expect("gn_groups") as usize
}

/// Writes the parity state dict with the given wrapping and loads it back.
fn load_parity(
    dir: &Path,
    file: &str,
    wrap: PthWrap,
    edit: impl FnOnce(&mut Vec<(String, PthTensor)>),
) -> Result<Model, LoadError> {
    let mut entries = resunet_parity_state_dict(&FEATURES, 3, 1);
    edit(&mut entries);
    let path = dir.join(file);
    write_pth(&path, &entries, wrap).expect("write pth");
    let overrides = ArchOverrides {
        gn_groups: Some(gn_groups_from_meta()),
        input_size: None,
    };
    Model::load_with_overrides(&path, DevicePreference::Cpu, overrides)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn pth_tar_checkpoint_with_module_prefix_matches_pytorch_logits() {
    let dir = tempfile::tempdir().unwrap();
    let model = load_parity(
        dir.path(),
        "checkpoint_epoch_9.pth.tar",
        PthWrap::old_service_checkpoint(),
        |_| {},
    )
    .unwrap();
    assert_eq!(model.config().features, FEATURES);
    assert_eq!(
        model.config().input_size,
        1024,
        "PyTorch checkpoints default to the old 1024 input"
    );
    // A PyTorch checkpoint carries no GroupNorm group count: without an override the
    // loader takes the old service's 32, which cannot divide these widths.
    let path = dir.path().join("checkpoint_epoch_9.pth.tar");
    let err = Model::load(&path, DevicePreference::Cpu).unwrap_err();
    assert!(
        matches!(err, LoadError::Weights(WeightsError::InvalidConfig(_))),
        "{err:?}"
    );
    let model = model.with_input_size(SIDE).unwrap();
    let ours = model.logits(&parity_input(SIDE, SIDE)).unwrap();
    let diff = max_abs_diff(&ours, &expected_logits());
    assert!(diff <= TOLERANCE, "max |candle - pytorch| = {diff}");
}

#[test]
fn bare_state_dict_loads_too() {
    let dir = tempfile::tempdir().unwrap();
    let model = load_parity(dir.path(), "bare.pth", PthWrap::Bare, |_| {}).unwrap();
    assert_eq!(model.config().features, FEATURES);
}

#[test]
fn missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_parity(
        dir.path(),
        "missing.pth.tar",
        PthWrap::old_service_checkpoint(),
        |e| e.retain(|(k, _)| k != "attentions.2.psi.1.running_var"),
    )
    .unwrap_err();
    match err {
        LoadError::Weights(WeightsError::MissingTensor { name }) => {
            assert_eq!(name, "attentions.2.psi.1.running_var")
        }
        other => panic!("unexpected error {other:?}"),
    }
}

#[test]
fn unexpected_and_misshaped_tensors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_parity(dir.path(), "extra.pth", PthWrap::Bare, |e| {
        e.push((
            "decoder.extra.weight".into(),
            PthTensor::F32 {
                shape: vec![2],
                data: vec![0.0, 1.0],
            },
        ))
    })
    .unwrap_err();
    assert!(
        matches!(err, LoadError::Weights(WeightsError::UnexpectedTensor { ref name }) if name == "decoder.extra.weight"),
        "{err:?}"
    );
    let err = load_parity(dir.path(), "shape.pth", PthWrap::Bare, |e| {
        for (k, t) in e.iter_mut() {
            if k == "downs.1.se.fc.2.weight" {
                *t = PthTensor::F32 {
                    shape: vec![32, 3],
                    data: vec![0.0; 96],
                };
            }
        }
    })
    .unwrap_err();
    assert!(
        matches!(err, LoadError::Weights(WeightsError::ShapeMismatch { ref name, .. }) if name == "downs.1.se.fc.2.weight"),
        "{err:?}"
    );
}

#[test]
fn safetensors_round_trip_keeps_architecture_and_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let groups = gn_groups_from_meta();
    let path = dir.path().join("checkpoint_epoch_9.pth.tar");
    write_pth(
        &path,
        &resunet_parity_state_dict(&FEATURES, 3, 1),
        PthWrap::old_service_checkpoint(),
    )
    .unwrap();
    let model = Model::load_with_overrides(
        &path,
        DevicePreference::Cpu,
        ArchOverrides {
            gn_groups: Some(groups),
            input_size: None,
        },
    )
    .unwrap()
    .with_input_size(SIDE)
    .unwrap();
    let st = dir.path().join("model.safetensors");
    model.save_safetensors(&st).unwrap();
    let reloaded = Model::load(&st, DevicePreference::Cpu).unwrap();
    assert_eq!(reloaded.config(), model.config());
    let input = parity_input(SIDE, SIDE);
    assert_eq!(
        reloaded.logits(&input).unwrap(),
        model.logits(&input).unwrap()
    );
}

#[test]
fn garbage_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bin");
    std::fs::write(&path, b"definitely not weights").unwrap();
    let err = Model::load(&path, DevicePreference::Cpu).unwrap_err();
    assert!(
        matches!(err, LoadError::Weights(WeightsError::UnknownFormat { .. })),
        "{err:?}"
    );
    let err = Model::load(
        &dir.path().join("absent.safetensors"),
        DevicePreference::Cpu,
    )
    .unwrap_err();
    assert!(
        matches!(err, LoadError::Weights(WeightsError::Io { .. })),
        "{err:?}"
    );
}
