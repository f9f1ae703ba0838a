//! The targets of the autoscaling signal, validated.

use std::time::Duration;

/// Targets and bounds of `spheromesh_desired_replicas`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingSettings {
    /// RabbitMQ messages waiting per replica that the mesh should hold at most.
    pub queue_per_replica: f64,
    /// Tasks running or queued per slot, mesh-wide, that the mesh should run at.
    pub slot_utilisation: f64,
    /// A ratio within this distance of 1 changes nothing (the HPA's default is 0.1).
    pub tolerance: f64,
    /// A lower recommendation only wins once it has held this long.
    pub scale_down_window: Duration,
    /// Never fewer.
    pub min_replicas: u32,
    /// Never more.
    pub max_replicas: u32,
}

impl Default for ScalingSettings {
    fn default() -> Self {
        Self {
            queue_per_replica: 10.0,
            slot_utilisation: 0.7,
            tolerance: 0.1,
            scale_down_window: Duration::from_secs(300),
            min_replicas: 1,
            max_replicas: 100,
        }
    }
}

/// A rule of [`ScalingSettings`] that the values break.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScalingError {
    /// A target is zero, negative or not a number.
    #[error("scaling target {name} must be a positive number, got {value}")]
    NonPositiveTarget {
        /// Which setting.
        name: &'static str,
        /// Its value.
        value: f64,
    },
    /// The tolerance is outside `[0, 1)`.
    #[error("scaling tolerance must be at least 0 and below 1, got {0}")]
    Tolerance(f64),
    /// `min_replicas` is 0: the mesh would recommend removing its last node.
    #[error("min replicas must be at least 1")]
    ZeroMinReplicas,
    /// `max_replicas` is below `min_replicas`.
    #[error("max replicas {max} is below min replicas {min}")]
    MaxBelowMin {
        /// `min_replicas`.
        min: u32,
        /// `max_replicas`.
        max: u32,
    },
}

impl ScalingSettings {
    /// Checks every rule; the first broken one is named.
    ///
    /// # Errors
    ///
    /// The [`ScalingError`] of the broken rule.
    pub fn validate(&self) -> Result<(), ScalingError> {
        for (name, value) in [
            ("queue per replica", self.queue_per_replica),
            ("slot utilisation", self.slot_utilisation),
        ] {
            if !(value > 0.0 && value.is_finite()) {
                return Err(ScalingError::NonPositiveTarget { name, value });
            }
        }
        if !(0.0..1.0).contains(&self.tolerance) {
            return Err(ScalingError::Tolerance(self.tolerance));
        }
        if self.min_replicas == 0 {
            return Err(ScalingError::ZeroMinReplicas);
        }
        if self.max_replicas < self.min_replicas {
            return Err(ScalingError::MaxBelowMin {
                min: self.min_replicas,
                max: self.max_replicas,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_each_broken_rule_is_named() {
        assert_eq!(ScalingSettings::default().validate(), Ok(()));
        let base = ScalingSettings::default;
        let cases = [
            (
                ScalingSettings {
                    queue_per_replica: 0.0,
                    ..base()
                },
                "queue per replica",
            ),
            (
                ScalingSettings {
                    slot_utilisation: f64::NAN,
                    ..base()
                },
                "slot utilisation",
            ),
            (
                ScalingSettings {
                    tolerance: 1.0,
                    ..base()
                },
                "tolerance",
            ),
            (
                ScalingSettings {
                    min_replicas: 0,
                    ..base()
                },
                "min replicas",
            ),
            (
                ScalingSettings {
                    min_replicas: 3,
                    max_replicas: 2,
                    ..base()
                },
                "below min",
            ),
        ];
        for (settings, words) in cases {
            let error = settings.validate().expect_err(words).to_string();
            assert!(error.contains(words), "{error}");
        }
    }
}
