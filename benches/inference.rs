//! Inference benchmarks (criterion): every stage of `spheromesh segment` and the forward
//! pass of both architectures, on synthetic micrographs. `benches/run.sh` runs them with the
//! PyTorch baseline (`benches/torch/forward.py`) and `benches/report.py` tabulates the result
//! for `docs/BENCHMARKS.md`.
//!
//! | group | what one iteration does |
//! |---|---|
//! | `decode_preprocess/png_1024` | [`decode_rgb8`] of a 1024x1024 PNG + [`to_model_input`] at 256 |
//! | `forward_shipped/{S}` | [`Model::probabilities`], shipped weights run at side `S` |
//! | `forward_original/{S}` | the same for the original 132 M-parameter architecture (parity weights) |
//! | `postprocess/256_to_1024` | threshold, resize to 1024, 3x3 open/close, polygons, filtered mask |
//! | `postprocess/hysteresis_256` | [`suppress_unconfirmed`] on the 256 grid (runs before the above) |
//! | `segment_end_to_end_shipped_1024/png` | [`Segmenter::segment_bytes`] on a 1024x1024 PNG |
//!
//! The original architecture gets the deterministic `parity-v2` weights
//! ([`test_utils::parity_model`]): a forward pass costs the same whatever the values, and
//! these are the weights `forward.py` loads into PyTorch, so the two timings compare the
//! same computation.
//!
//! Environment knobs (all optional):
//! * `SPHEROMESH_BENCH_MODEL`: shipped weights (default
//!   `models/spheroid-resunet-small.safetensors`). When the file is absent the shipped
//!   architecture gets parity weights and a warning is printed: the forward timings stay
//!   valid, the post-processing inside `segment_end_to_end` does not (untrained masks).
//! * `SPHEROMESH_BENCH_SHIPPED_SIZES`, `SPHEROMESH_BENCH_ORIGINAL_SIZES`: comma-separated
//!   input sides, default `256,512,1024`; `none` skips the group. The original at 1024 takes
//!   30-60 s per pass on 2 cores, so a quick run sets `SPHEROMESH_BENCH_ORIGINAL_SIZES=256`.
//! * `SPHEROMESH_BENCH_SAVE_IMAGE`: also write the synthetic 1024x1024 PNG to this path
//!   (`run.sh` measures the peak memory of `spheromesh segment` on it).
//! * `DEVICE_PREFERENCE`: `cpu` (default), `cuda` or `best`, as the node reads it. With a
//!   binary built with `--features cuda` (`scripts/build-cuda.sh`), `cuda` times the forward
//!   groups and `segment_end_to_end` on the GPU; decode and post-processing stay on the CPU.
//! * `RAYON_NUM_THREADS`: leave unset so candle uses every physical core (2 on the
//!   reference machine); `run.sh` unsets it.
//!
//! Slow groups use [`SamplingMode::Flat`] with 10 samples: criterion's default linear mode
//! would run 1 + 2 + ... + 10 = 55 iterations, which is hours for the original at 1024.

use std::env;
use std::hint::black_box;
use std::io::Cursor;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use image::imageops::FilterType;
use image::ImageFormat;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use spheromesh_inference::postprocess::{
    extract_polygons, open_close_3x3, rasterize_polygons, suppress_unconfirmed,
    threshold_upsampled, Mask, PolygonOptions,
};
use spheromesh_inference::{
    decode_rgb8, test_utils, to_model_input, DecodeLimits, DevicePreference, Model, ResUNetConfig,
    SegmentOptions, Segmenter, DEFAULT_MIN_PEAK,
};

/// Side of the synthetic micrographs: the old service's typical upload.
const IMAGE_SIDE: u32 = 1024;
/// Seed of the synthetic micrograph; fixed so every run times the same scene.
const IMAGE_SEED: u64 = 7;
/// Default input sides of the forward groups.
const DEFAULT_SIZES: &str = "256,512,1024";
/// Threshold of [`SegmentOptions::default`], repeated for the postprocess group.
const THRESHOLD: f32 = 0.5;

/// The shared inputs, built once.
struct Fixture {
    /// The synthetic micrograph as an in-memory PNG.
    png: Vec<u8>,
    /// Its ground-truth mask averaged down to the shipped model's side, as probabilities.
    probabilities: Vec<f32>,
    /// Side of `probabilities`.
    prob_side: u32,
}

fn fixture() -> Fixture {
    let sample = spheromesh_inference::synth::generate_sized(IMAGE_SEED, IMAGE_SIDE, IMAGE_SIDE)
        .unwrap_or_else(|e| panic!("synthetic image: {e}"));
    let mut png = Vec::new();
    sample
        .image
        .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .unwrap_or_else(|e| panic!("encoding the synthetic PNG: {e}"));
    if let Some(path) = env::var_os("SPHEROMESH_BENCH_SAVE_IMAGE") {
        // run.sh measures the CLI's peak memory on this same scene.
        std::fs::write(&path, &png)
            .unwrap_or_else(|e| panic!("writing {}: {e}", PathBuf::from(&path).display()));
    }
    // The postprocess group times the tail of the pipeline on realistic blobs. Ground truth
    // averaged to 256 gives soft edges like a network's output without depending on how far
    // training has got, so the timing is comparable across checkpoints.
    let prob_side = ResUNetConfig::shipped().input_size as u32;
    let small = image::imageops::resize(&sample.mask, prob_side, prob_side, FilterType::Triangle);
    let probabilities = small.pixels().map(|p| f32::from(p.0[0]) / 255.0).collect();
    Fixture {
        png,
        probabilities,
        prob_side,
    }
}

/// Where the models run: `DEVICE_PREFERENCE`, default the CPU (the reference machine).
fn device_preference() -> DevicePreference {
    let raw = env::var("DEVICE_PREFERENCE").unwrap_or_else(|_| "cpu".to_owned());
    let pref = raw
        .parse()
        .unwrap_or_else(|e| panic!("DEVICE_PREFERENCE={raw}: {e}"));
    eprintln!("bench: DEVICE_PREFERENCE={raw}");
    pref
}

/// Input sides from `var` (comma-separated), or `default`; `none` or empty gives no size.
fn sizes(var: &str, default: &str) -> Vec<usize> {
    let raw = env::var(var).unwrap_or_else(|_| default.to_owned());
    let raw = raw.trim();
    if raw.is_empty() || raw.eq_ignore_ascii_case("none") {
        return Vec::new();
    }
    raw.split(',')
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{var}={raw}: `{s}` is not an input side"))
        })
        .collect()
}

/// The shipped model from `SPHEROMESH_BENCH_MODEL` or `models/`, or parity weights of the
/// shipped architecture when no file is there yet (with a warning).
fn shipped_model(pref: DevicePreference) -> Model {
    let path = env::var_os("SPHEROMESH_BENCH_MODEL").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("models/spheroid-resunet-small.safetensors")
        },
        PathBuf::from,
    );
    if path.exists() {
        let model =
            Model::load(&path, pref).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
        eprintln!(
            "bench: shipped model {} (features {:?}, input {}) on {}",
            path.display(),
            model.config().features,
            model.config().input_size,
            model.device_name()
        );
        model
    } else {
        eprintln!(
            "bench: WARNING: {} not found; the shipped architecture runs with parity weights \
             (forward timings valid, segment_end_to_end post-processing not representative)",
            path.display()
        );
        on_device(test_utils::parity_model(&ResUNetConfig::shipped()), pref)
    }
}

/// `model` moved to the `pref` device, through a safetensors file: the parity
/// weights are built on the CPU and loading is the one public way onto another device.
fn on_device(model: Model, pref: DevicePreference) -> Model {
    if pref == DevicePreference::Cpu {
        return model;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let path = dir.path().join("parity.safetensors");
    model
        .save_safetensors(&path)
        .unwrap_or_else(|e| panic!("saving parity weights: {e}"));
    let moved = Model::load(&path, pref).unwrap_or_else(|e| panic!("loading on {pref:?}: {e}"));
    eprintln!("bench: parity model on {}", moved.device_name());
    moved
}

fn at_size(model: &Model, size: usize) -> Model {
    // Cloning a model shares its weight tensors (reference-counted), so this is cheap.
    model
        .clone()
        .with_input_size(size)
        .unwrap_or_else(|e| panic!("input side {size}: {e}"))
}

fn decode_preprocess(c: &mut Criterion, fx: &Fixture) {
    let limits = DecodeLimits::default();
    let side = ResUNetConfig::shipped().input_size as u32;
    let mut group = c.benchmark_group("decode_preprocess");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    group.bench_function("png_1024", |b| {
        b.iter(|| {
            let rgb = decode_rgb8(black_box(&fx.png), &limits)
                .unwrap_or_else(|e| panic!("decoding: {e}"));
            to_model_input(&rgb, side)
        });
    });
    group.finish();
}

/// `forward_{name}/{S}` for each side in `sizes`.
fn forward(c: &mut Criterion, fx: &Fixture, name: &str, model: &Model, sizes: &[usize]) {
    if sizes.is_empty() {
        return;
    }
    let rgb =
        decode_rgb8(&fx.png, &DecodeLimits::default()).unwrap_or_else(|e| panic!("decoding: {e}"));
    let mut group = c.benchmark_group(format!("forward_{name}"));
    // Flat sampling, 10 samples, one warm-up pass: a slow pass is run 11 times in all.
    // Criterion warns that the 1 s target cannot be met when one pass takes longer; that is
    // expected and the samples are still taken.
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    for &size in sizes {
        let model = at_size(model, size);
        let input = to_model_input(&rgb, size as u32);
        group.bench_with_input(BenchmarkId::from_parameter(size), &input, |b, input| {
            b.iter(|| {
                model
                    .probabilities(black_box(input))
                    .unwrap_or_else(|e| panic!("forward at {size}: {e}"))
            });
        });
    }
    group.finish();
}

fn postprocess(c: &mut Criterion, fx: &Fixture) {
    let opts = PolygonOptions::default();
    let mut group = c.benchmark_group("postprocess");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    // What `Segmenter` does after the network (inference/src/segment.rs), in both orders.
    let tail = |full: Mask| {
        let cleaned = open_close_3x3(&full);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let polygons = extract_polygons(&cleaned, &opts, &mut rng);
        let filtered = rasterize_polygons(&polygons, IMAGE_SIDE, IMAGE_SIDE);
        (polygons, filtered)
    };
    group.bench_function("hysteresis_256", |b| {
        b.iter(|| {
            let side = fx.prob_side as usize;
            suppress_unconfirmed(
                black_box(&fx.probabilities),
                side,
                side,
                THRESHOLD,
                DEFAULT_MIN_PEAK,
            )
            .len()
        });
    });
    group.bench_function("256_to_1024_bilinear", |b| {
        b.iter(|| {
            let side = fx.prob_side;
            tail(threshold_upsampled(
                &fx.probabilities,
                side,
                side,
                IMAGE_SIDE,
                IMAGE_SIDE,
                THRESHOLD,
            ))
        });
    });
    group.bench_function("256_to_1024_nearest", |b| {
        b.iter(|| {
            let binary = fx
                .probabilities
                .iter()
                .map(|&p| u8::from(p > THRESHOLD))
                .collect();
            let small = Mask::from_vec(fx.prob_side, fx.prob_side, binary)
                .unwrap_or_else(|| panic!("mask size"));
            tail(small.resize_nearest(IMAGE_SIDE, IMAGE_SIDE))
        });
    });
    group.finish();
}

fn segment_end_to_end(c: &mut Criterion, fx: &Fixture, shipped: &Model) {
    let segmenter = Segmenter::new(shipped.clone(), DecodeLimits::default());
    let opts = SegmentOptions::default();
    let mut group = c.benchmark_group("segment_end_to_end_shipped_1024");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("png", |b| {
        b.iter(|| {
            segmenter
                .segment_bytes(black_box(&fx.png), &opts)
                .unwrap_or_else(|e| panic!("segment: {e}"))
        });
    });
    // What the nodes serve by default for the shipped model (`--tta auto`): 8 views.
    let with_tta = segmenter.clone().with_dihedral_tta(true);
    group.bench_function("png_tta8", |b| {
        b.iter(|| {
            with_tta
                .segment_bytes(black_box(&fx.png), &opts)
                .unwrap_or_else(|e| panic!("segment: {e}"))
        });
    });
    group.finish();
}

/// As the `spheromesh` binary does: huge pages for the original network's large activations.
#[global_allocator]
static ALLOCATOR: spheromesh_inference::HugePageAllocator = spheromesh_inference::HugePageAllocator;

fn benches(c: &mut Criterion) {
    // As the `spheromesh` binary does at start.
    spheromesh_inference::keep_freed_memory_for_reuse();
    if let Ok(n) = env::var("RAYON_NUM_THREADS") {
        eprintln!("bench: RAYON_NUM_THREADS={n} (unset it to use every physical core)");
    }
    let fx = fixture();
    decode_preprocess(c, &fx);
    postprocess(c, &fx);

    let pref = device_preference();
    let shipped = shipped_model(pref);
    segment_end_to_end(c, &fx, &shipped);
    let shipped_sizes = sizes("SPHEROMESH_BENCH_SHIPPED_SIZES", DEFAULT_SIZES);
    forward(c, &fx, "shipped", &shipped, &shipped_sizes);
    drop(shipped);

    let original_sizes = sizes("SPHEROMESH_BENCH_ORIGINAL_SIZES", DEFAULT_SIZES);
    if !original_sizes.is_empty() {
        // Building the 132 M parity weights takes a few seconds; skip it when unused.
        let original = on_device(test_utils::parity_model(&ResUNetConfig::default()), pref);
        forward(c, &fx, "original", &original, &original_sizes);
    }
}

criterion_group!(inference, benches);
criterion_main!(inference);
