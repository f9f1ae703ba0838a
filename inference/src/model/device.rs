//! Choosing where inference runs: `DEVICE_PREFERENCE=best|cpu|cuda`, as the
//! old service read it. CUDA exists only in builds with the `cuda` feature.

use std::str::FromStr;

use candle_core::Device;

/// Which device the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DevicePreference {
    /// CUDA when built in and a GPU answers, else the CPU.
    #[default]
    Best,
    /// Always the CPU.
    Cpu,
    /// CUDA or an error.
    Cuda,
}

/// A device that was asked for but cannot be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// Not one of `best`, `cpu`, `cuda`.
    #[error("unknown device preference `{0}` (expected best, cpu or cuda)")]
    UnknownPreference(String),
    /// `cuda` was required but is not available.
    #[error("CUDA was requested but is unavailable: {0}")]
    CudaUnavailable(String),
}

impl FromStr for DevicePreference {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "best" | "auto" | "" => Ok(Self::Best),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda),
            other => Err(DeviceError::UnknownPreference(other.to_owned())),
        }
    }
}

/// Resolves the preference to a device, falling back to the CPU for `Best`.
pub(crate) fn select_device(pref: DevicePreference) -> Result<Device, DeviceError> {
    match pref {
        DevicePreference::Cpu => Ok(Device::Cpu),
        DevicePreference::Cuda => cuda().map_err(DeviceError::CudaUnavailable),
        DevicePreference::Best => Ok(cuda().unwrap_or_else(|why| {
            tracing::info!(reason = %why, "cuda not available, using cpu");
            Device::Cpu
        })),
    }
}

#[cfg(feature = "cuda")]
fn cuda() -> Result<Device, String> {
    Device::new_cuda(0).map_err(|e| e.to_string())
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Result<Device, String> {
    Err("this binary was built without the `cuda` feature".into())
}

/// A short human name for a device ("cpu", "cuda:0").
pub(crate) fn device_name(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda:0".into(),
        Device::Metal(_) => "metal".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_old_service_values() {
        assert_eq!(
            "best".parse::<DevicePreference>().unwrap(),
            DevicePreference::Best
        );
        assert_eq!(
            "CPU".parse::<DevicePreference>().unwrap(),
            DevicePreference::Cpu
        );
        assert_eq!(
            "cuda".parse::<DevicePreference>().unwrap(),
            DevicePreference::Cuda
        );
        assert!(matches!(
            "tpu".parse::<DevicePreference>(),
            Err(DeviceError::UnknownPreference(_))
        ));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_required_without_the_feature_is_an_error_and_best_falls_back() {
        assert!(matches!(
            select_device(DevicePreference::Cuda),
            Err(DeviceError::CudaUnavailable(_))
        ));
        assert!(select_device(DevicePreference::Best).unwrap().is_cpu());
    }
}
