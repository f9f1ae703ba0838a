//! What runs a task once it has a slot: the real model, or a test double that only takes
//! time.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use spheromesh_inference::{
    postprocess::PolygonOptions, probe_format, DecodeError, DecodeLimits, SegmentError,
    SegmentOptions, Segmenter,
};

use super::task::TaskError;

/// Prefix of the `--model` value that selects the [`Engine::Synthetic`] test double.
pub const SYNTHETIC_PREFIX: &str = "synthetic:";

/// The segmentation engine a node runs.
#[derive(Clone)]
pub enum Engine {
    /// The ResUNet, loaded once and shared by every slot.
    Model(Segmenter),
    /// **Test double** for routing tests and benchmarks: reads the image header (so a
    /// corrupt image still fails), sleeps and returns no polygons. Selected with
    /// `--model synthetic:SERVICE_MS` (every task takes SERVICE_MS), or
    /// `--model synthetic:width` (a task takes as many milliseconds as its image is wide,
    /// for mixed-duration benchmarks); never use it to serve real users.
    Synthetic {
        /// Time every task takes; `None`: the image width in milliseconds.
        service: Option<Duration>,
        /// Byte and pixel caps, as for the real model.
        limits: DecodeLimits,
    },
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Engine::Model(s) => f
                .debug_struct("Model")
                .field("device", &s.model().device_name())
                .finish_non_exhaustive(),
            Engine::Synthetic { service, .. } => f
                .debug_struct("Synthetic")
                .field("service", service)
                .finish_non_exhaustive(),
        }
    }
}

/// Output of one engine run.
#[derive(Debug, Clone)]
pub struct EngineOutput {
    /// The contract's polygon list.
    pub polygons: serde_json::Value,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
}

/// A `synthetic:MS` or `synthetic:width` model selector: the service time, `None` for
/// "the image width in milliseconds".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticSpec(pub Option<Duration>);

impl FromStr for SyntheticSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let rest = text
            .strip_prefix(SYNTHETIC_PREFIX)
            .ok_or_else(|| format!("{text:?} does not start with {SYNTHETIC_PREFIX:?}"))?;
        if rest == "width" {
            return Ok(SyntheticSpec(None));
        }
        let ms: u64 = rest.parse().map_err(|_| {
            format!("{text:?}: expected {SYNTHETIC_PREFIX}MILLISECONDS or {SYNTHETIC_PREFIX}width")
        })?;
        Ok(SyntheticSpec(Some(Duration::from_millis(ms))))
    }
}

impl Engine {
    /// The decode limits the engine enforces.
    pub fn limits(&self) -> &DecodeLimits {
        match self {
            Engine::Model(s) => s.limits(),
            Engine::Synthetic { limits, .. } => limits,
        }
    }

    /// How many inferences run at once unless the operator says otherwise: one per core
    /// on the CPU; one on a GPU, where concurrent passes only contend for the device's one
    /// stream (H200, 8 slots: 579 tasks/min with one permit, 399 with sixteen; docs/CUDA.md).
    pub fn default_compute_permits(&self, cores: u32) -> u32 {
        match self {
            Engine::Model(s) if !s.model().runs_on_cpu() => 1,
            _ => cores.max(1),
        }
    }

    /// Whether inference is real work for the CPU (so it needs a compute permit).
    pub fn uses_compute(&self) -> bool {
        matches!(self, Engine::Model(_))
    }

    /// Where inference runs (`cpu`, `cuda:0`), or `synthetic` for the test double.
    pub fn device_name(&self) -> String {
        match self {
            Engine::Model(s) => s.model().device_name(),
            Engine::Synthetic { .. } => "synthetic".to_owned(),
        }
    }

    /// A short description for logs and `/health`.
    pub fn describe(&self) -> String {
        match self {
            Engine::Model(s) => format!(
                "resunet features={:?} input={} device={}",
                s.model().config().features,
                s.model().config().input_size,
                s.model().device_name()
            ),
            Engine::Synthetic {
                service: Some(service),
                ..
            } => format!(
                "synthetic test double ({} ms per task)",
                service.as_millis()
            ),
            Engine::Synthetic { service: None, .. } => {
                "synthetic test double (image width in ms per task)".to_owned()
            }
        }
    }

    /// Cheap checks an entry node makes before routing a task anywhere: size limit and a
    /// supported format, so a hopeless request never crosses the network.
    ///
    /// # Errors
    ///
    /// [`TaskError::TooLarge`] or [`TaskError::UnsupportedMediaType`].
    pub fn precheck(limits: &DecodeLimits, image: &[u8], threshold: f32) -> Result<(), TaskError> {
        if !(threshold > 0.0 && threshold < 1.0) {
            return Err(TaskError::InvalidRequest(format!(
                "threshold {threshold} must be strictly between 0 and 1"
            )));
        }
        if image.is_empty() {
            return Err(TaskError::BadImage(DecodeError::Empty.to_string()));
        }
        if image.len() > limits.max_bytes {
            return Err(TaskError::TooLarge(
                DecodeError::TooManyBytes {
                    bytes: image.len(),
                    limit: limits.max_bytes,
                }
                .to_string(),
            ));
        }
        if probe_format(image).is_none() {
            return Err(TaskError::UnsupportedMediaType(
                "unsupported image format; send PNG, JPEG, TIFF or BMP".to_owned(),
            ));
        }
        Ok(())
    }

    /// Runs the model twice on a blank image so that the first real task does not pay for
    /// one-time work (CUDA compiling its kernels: 14 s on a fresh GPU host; building the
    /// Winograd kernels on the CPU). Returns how long the second, steady-state pass took:
    /// the service time the node advertises until it has measured real tasks. The test
    /// double with a fixed time runs one pass of it and reports that (as a real node
    /// reports its model's); `synthetic:width` has no one service time and reports `None`.
    ///
    /// # Errors
    ///
    /// [`TaskError::Internal`] when the pass fails (the model cannot serve at all).
    pub fn warm_up(&self) -> Result<Option<Duration>, TaskError> {
        match self {
            Engine::Model(segmenter) => {
                let blank = image::RgbImage::new(64, 64);
                let pass = || {
                    let started = std::time::Instant::now();
                    segmenter
                        .segment_image(&blank, &SegmentOptions::default())
                        .map_err(|e| TaskError::Internal(format!("warm-up pass failed: {e}")))?;
                    Ok::<_, TaskError>(started.elapsed())
                };
                pass()?;
                pass().map(Some)
            }
            Engine::Synthetic {
                service: Some(service),
                ..
            } => {
                let started = std::time::Instant::now();
                std::thread::sleep(*service);
                Ok(Some(started.elapsed()))
            }
            Engine::Synthetic { service: None, .. } => Ok(None),
        }
    }

    /// Runs one task on the calling thread (blocking: call it from a blocking pool).
    ///
    /// # Errors
    ///
    /// [`TaskError`] naming what was wrong with the input or the run.
    pub fn run(
        &self,
        image: &[u8],
        threshold: f32,
        simplify_tolerance: Option<f64>,
    ) -> Result<EngineOutput, TaskError> {
        match self {
            Engine::Model(segmenter) => {
                let opts = SegmentOptions {
                    threshold,
                    polygons: PolygonOptions {
                        simplify_tolerance,
                        ..PolygonOptions::default()
                    },
                };
                let seg = segmenter.segment_bytes(image, &opts).map_err(map_error)?;
                let polygons = serde_json::to_value(&seg.polygons)
                    .map_err(|e| TaskError::Internal(format!("encoding polygons: {e}")))?;
                Ok(EngineOutput {
                    polygons,
                    width: seg.width,
                    height: seg.height,
                })
            }
            Engine::Synthetic { service, limits } => {
                Self::precheck(limits, image, threshold)?;
                let (width, height) = header_dimensions(image)?;
                std::thread::sleep(service.unwrap_or(Duration::from_millis(u64::from(width))));
                Ok(EngineOutput {
                    polygons: serde_json::Value::Array(Vec::new()),
                    width,
                    height,
                })
            }
        }
    }
}

/// Image dimensions from its header, without decoding pixels.
fn header_dimensions(image: &[u8]) -> Result<(u32, u32), TaskError> {
    image::ImageReader::new(std::io::Cursor::new(image))
        .with_guessed_format()
        .map_err(|e| TaskError::BadImage(e.to_string()))?
        .into_dimensions()
        .map_err(|e| TaskError::BadImage(format!("cannot read the image header: {e}")))
}

fn map_error(error: SegmentError) -> TaskError {
    match error {
        SegmentError::Decode(DecodeError::TooManyBytes { .. }) => {
            TaskError::TooLarge(error.to_string())
        }
        SegmentError::Decode(DecodeError::UnsupportedFormat { .. }) => {
            TaskError::UnsupportedMediaType(error.to_string())
        }
        SegmentError::Decode(_) => TaskError::BadImage(error.to_string()),
        SegmentError::InvalidThreshold(_) | SegmentError::InvalidOptions(_) => {
            TaskError::InvalidRequest(error.to_string())
        }
        other => TaskError::Internal(other.to_string()),
    }
}

/// The model as operators see it named: the file name of a path, or the test double's spec
/// as given.
pub fn model_label(model_path: &str) -> String {
    std::path::Path::new(model_path).file_name().map_or_else(
        || model_path.to_owned(),
        |n| n.to_string_lossy().into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_engine_runs_one_inference_per_core_and_warms_up() {
        let synthetic = Engine::Synthetic {
            service: None,
            limits: DecodeLimits::default(),
        };
        assert_eq!(synthetic.default_compute_permits(6), 6);
        assert_eq!(synthetic.default_compute_permits(0), 1);
        let model = spheromesh_inference::Model::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("models/spheroid-resunet-small.safetensors"),
            spheromesh_inference::DevicePreference::Cpu,
        )
        .unwrap();
        let cpu = Engine::Model(spheromesh_inference::Segmenter::new(
            model,
            DecodeLimits::default(),
        ));
        assert_eq!(cpu.default_compute_permits(6), 6);
        assert!(cpu.warm_up().unwrap().is_some());
        assert_eq!(synthetic.warm_up().unwrap(), None);
    }

    #[test]
    fn synthetic_spec_parses_milliseconds() {
        assert_eq!(
            "synthetic:150".parse::<SyntheticSpec>(),
            Ok(SyntheticSpec(Some(Duration::from_millis(150))))
        );
        assert_eq!(
            "synthetic:width".parse::<SyntheticSpec>(),
            Ok(SyntheticSpec(None))
        );
        assert!("synthetic:".parse::<SyntheticSpec>().is_err());
        assert!("models/x.safetensors".parse::<SyntheticSpec>().is_err());
    }

    #[test]
    fn precheck_refuses_bad_requests_before_routing() {
        let limits = DecodeLimits {
            max_bytes: 16,
            ..DecodeLimits::default()
        };
        let png_magic = b"\x89PNG\r\n\x1a\n0000";
        assert!(Engine::precheck(&limits, png_magic, 0.5).is_ok());
        assert_eq!(
            Engine::precheck(&limits, png_magic, 1.0).map_err(|e| e.code()),
            Err("invalid_request")
        );
        assert_eq!(
            Engine::precheck(&limits, &[0u8; 17], 0.5).map_err(|e| e.code()),
            Err("payload_too_large")
        );
        assert_eq!(
            Engine::precheck(&limits, b"GIF89a......", 0.5).map_err(|e| e.code()),
            Err("unsupported_media_type")
        );
        assert_eq!(
            Engine::precheck(&limits, b"", 0.5).map_err(|e| e.code()),
            Err("bad_image")
        );
    }

    #[test]
    fn synthetic_engine_fails_a_corrupt_image() {
        let engine = Engine::Synthetic {
            service: Some(Duration::ZERO),
            limits: DecodeLimits::default(),
        };
        let truncated = b"\x89PNG\r\n\x1a\n\0\0";
        assert_eq!(
            engine.run(truncated, 0.5, None).map_err(|e| e.code()).err(),
            Some("bad_image")
        );
    }
}
