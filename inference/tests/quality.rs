//! The shipped model's quality on held-out synthetic data (seeds never used
//! in training), against the classical Otsu baseline through the same
//! post-processing, served as the nodes serve it (8-view test-time
//! augmentation, `--tta auto`; probabilities resized bilinearly to the image
//! before the threshold).
//!
//! The model-quality issue asks for: v2 held-out IoU >= 0.92, IoU >= 0.90 on the
//! independently written renderer (`eval::shift`), a gain >= 0.15 over Otsu on
//! the cell-cloud, bubble and fibre subsets, and at most 5 % of scenes without
//! a spheroid getting a polygon. Only the subset gains are met today
//! (models/README.md, with the default hysteresis `DEFAULT_MIN_PEAK`: v2 0.8780,
//! shift 0.8527, no-spheroid 41 % / 24 %). The
//! other floors below are regression guards just under the measured values,
//! NOT the targets; raise them as the model improves. The evaluation is
//! deterministic, so the guards do not flake.

use std::path::Path;
use std::sync::OnceLock;

use spheromesh_inference::eval::{evaluate_empty, evaluate_synthetic, EvalReport, SynthSet};
use spheromesh_inference::train::{TrainConfig, TRAIN_DATA_SEED};
use spheromesh_inference::{DecodeLimits, DevicePreference, Model, SegmentOptions, Segmenter};

/// Held-out seeds: disjoint from every training pool (all lie in
/// `TRAIN_DATA_SEED..TRAIN_DATA_SEED + 1_000_000`).
const HELD_OUT_SEED: u64 = 7_000_000;
const HELD_OUT_COUNT: usize = 120;
const EMPTY_COUNT: usize = 100;
/// Guard under the measured 0.8780 (issue target 0.92, not met).
const MIN_V2_IOU: f64 = 0.87;
/// Guard under the measured 0.8527 (issue target 0.90, not met).
const MIN_SHIFT_IOU: f64 = 0.845;
/// The floor (measured +0.185 cloud, +0.217 bubble, +0.183 fibre on v2; +0.157,
/// +0.198, +0.234 on the second renderer).
const MIN_SUBSET_GAIN: f64 = 0.15;
/// Guard over the measured 41 % (v2) and 24 % (shift) (issue target 5 %, not met).
const MAX_EMPTY_SHARE: f64 = 0.45;
/// Boundary F1 at 2 px: guard under the measured 0.511 (v2) and 0.461 (shift).
const MIN_BOUNDARY_F1: f64 = 0.44;

fn segmenter() -> &'static Segmenter {
    static SEGMENTER: OnceLock<Segmenter> = OnceLock::new();
    SEGMENTER.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models/spheroid-resunet-small.safetensors");
        let model = Model::load(&path, DevicePreference::Cpu).expect("shipped model loads");
        // As `spheromesh node|segment|eval` run it by default (`--tta auto`: a small model).
        Segmenter::new(model, DecodeLimits::default()).with_dihedral_tta(true)
    })
}

#[test]
fn held_out_seeds_are_outside_every_training_pool() {
    for cfg in [
        TrainConfig::shipped("unused".into()),
        TrainConfig::shipped_v2("unused".into(), "unused".into()),
    ] {
        let pool = cfg.pool_seeds();
        assert!(!pool.contains(&HELD_OUT_SEED), "{pool:?}");
        assert!(pool.start >= TRAIN_DATA_SEED && pool.end <= HELD_OUT_SEED);
    }
}

#[test]
fn v2_held_out_set_meets_its_floors() {
    let opts = SegmentOptions::default();
    let r = evaluate_synthetic(
        segmenter(),
        SynthSet::V2,
        HELD_OUT_SEED,
        HELD_OUT_COUNT,
        &opts,
    )
    .unwrap();
    eprintln!("v2: {r:#?}");
    assert!(
        r.model.overall.iou >= MIN_V2_IOU,
        "v2 mean IoU {:.4} < {MIN_V2_IOU}",
        r.model.overall.iou
    );
    assert!(
        r.model.overall.boundary_f1 >= MIN_BOUNDARY_F1,
        "v2 boundary F1 {:.4} < {MIN_BOUNDARY_F1}",
        r.model.overall.boundary_f1
    );
    assert_subset_gains("v2", &r);
}

/// The model beats Otsu + morphology by [`MIN_SUBSET_GAIN`] on the cloud, bubble and fibre
/// subsets of `r`.
fn assert_subset_gains(set: &str, r: &EvalReport) {
    for (name, model, otsu) in [
        ("cloud", r.model.cloud, r.baseline.cloud),
        ("bubble", r.model.bubble, r.baseline.bubble),
        ("fibre", r.model.fibre, r.baseline.fibre),
    ] {
        assert!(
            model.count >= 10,
            "{set}: too few {name} samples: {}",
            model.count
        );
        let gain = model.iou - otsu.iou;
        assert!(
            gain >= MIN_SUBSET_GAIN,
            "{set} {name} subset: IoU {:.4} vs Otsu {:.4}, gain {gain:.4} < {MIN_SUBSET_GAIN}",
            model.iou,
            otsu.iou
        );
    }
}

#[test]
fn independent_renderer_meets_its_floor() {
    let opts = SegmentOptions::default();
    let r = evaluate_synthetic(
        segmenter(),
        SynthSet::Shift,
        HELD_OUT_SEED,
        HELD_OUT_COUNT,
        &opts,
    )
    .unwrap();
    eprintln!("shift: {r:#?}");
    assert!(
        r.model.overall.iou >= MIN_SHIFT_IOU,
        "second-renderer mean IoU {:.4} < {MIN_SHIFT_IOU}",
        r.model.overall.iou
    );
    assert!(
        r.model.overall.boundary_f1 >= MIN_BOUNDARY_F1,
        "second-renderer boundary F1 {:.4} < {MIN_BOUNDARY_F1}",
        r.model.overall.boundary_f1
    );
    assert_subset_gains("shift", &r);
}

#[test]
fn scenes_without_spheroids_rarely_get_a_polygon() {
    let opts = SegmentOptions::default();
    for set in [SynthSet::V2, SynthSet::Shift] {
        let e = evaluate_empty(segmenter(), set, HELD_OUT_SEED, EMPTY_COUNT, &opts).unwrap();
        eprintln!("{set:?} no-spheroid: {e:?}");
        assert_eq!(e.images, EMPTY_COUNT);
        assert!(
            e.model_share() <= MAX_EMPTY_SHARE,
            "{set:?}: {} of {} images without a spheroid got a polygon",
            e.model_with_polygons,
            e.images
        );
    }
}
