//! The shipped model's quality on held-out synthetic data (seeds never used
//! in training), against the classical Otsu baseline through the same
//! post-processing. The thresholds are the acceptance bar.

use std::path::Path;

use spheromesh_inference::eval::evaluate_synthetic;
use spheromesh_inference::train::{TrainConfig, TRAIN_DATA_SEED};
use spheromesh_inference::{DecodeLimits, DevicePreference, Model, SegmentOptions, Segmenter};

/// Held-out seeds: disjoint from the training pool `TRAIN_DATA_SEED..+pool_size`.
const HELD_OUT_SEED: u64 = 7_000_000;
const HELD_OUT_COUNT: usize = 120;

#[test]
fn shipped_model_beats_the_bar_on_held_out_data() {
    let pool = TrainConfig::shipped("unused".into()).pool_size as u64;
    assert!(!(TRAIN_DATA_SEED..TRAIN_DATA_SEED + pool).contains(&HELD_OUT_SEED));
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/spheroid-resunet-small.safetensors");
    let model = Model::load(&path, DevicePreference::Cpu).expect("shipped model loads");
    let segmenter = Segmenter::new(model, DecodeLimits::default());
    let report = evaluate_synthetic(
        &segmenter,
        HELD_OUT_SEED,
        HELD_OUT_COUNT,
        &SegmentOptions::default(),
    )
    .unwrap();
    eprintln!("{report:#?}");
    assert!(
        report.model.hard.count >= 30,
        "too few hard samples: {}",
        report.model.hard.count
    );
    assert!(
        report.model.overall.iou >= 0.92,
        "mean IoU {:.4} < 0.92",
        report.model.overall.iou
    );
    let gain = report.model.hard.iou - report.baseline.hard.iou;
    assert!(gain >= 0.10, "hard-subset gain over Otsu {gain:.4} < 0.10");
}
