//! Options of polygon extraction, with the contract's defaults.
//!
//! The limits are SpherosegV4's (contract section 4): externals need an area
//! of at least 100 px and holes at least 50 px, both measured with the
//! shoelace formula on the traced contour (`cv2.contourArea`). Simplification
//! (Ramer-Douglas-Peucker, see `simplify.rs`) is opt-in.

/// Filters and simplification applied by [`extract_polygons`](super::extract_polygons).
#[derive(Debug, Clone, PartialEq)]
pub struct PolygonOptions {
    /// Smallest area (px, shoelace of the traced contour) of a kept external.
    pub min_external_area: f64,
    /// Smallest area (px, shoelace of the traced contour) of a kept hole.
    pub min_hole_area: f64,
    /// Ramer-Douglas-Peucker tolerance in pixels; `None` keeps every point.
    pub simplify_tolerance: Option<f64>,
}

impl Default for PolygonOptions {
    fn default() -> Self {
        Self {
            min_external_area: 100.0,
            min_hole_area: 50.0,
            simplify_tolerance: None,
        }
    }
}

/// A [`PolygonOptions`] field that breaks its rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidPolygonOptions {
    /// `min_external_area` must be finite and >= 0.
    #[error("min_external_area must be finite and >= 0, got {value}")]
    MinExternalArea {
        /// The rejected value.
        value: f64,
    },
    /// `min_hole_area` must be finite and >= 0.
    #[error("min_hole_area must be finite and >= 0, got {value}")]
    MinHoleArea {
        /// The rejected value.
        value: f64,
    },
    /// `simplify_tolerance` must be finite and > 0 when set.
    #[error("simplify_tolerance must be finite and > 0 when set, got {value}")]
    SimplifyTolerance {
        /// The rejected value.
        value: f64,
    },
}

impl PolygonOptions {
    /// Checks every field; [`extract_polygons`](super::extract_polygons) itself never fails.
    ///
    /// # Errors
    /// The first field that is NaN, infinite or out of range.
    pub fn validate(&self) -> Result<(), InvalidPolygonOptions> {
        let ok_area = |v: f64| v.is_finite() && v >= 0.0;
        if !ok_area(self.min_external_area) {
            return Err(InvalidPolygonOptions::MinExternalArea {
                value: self.min_external_area,
            });
        }
        if !ok_area(self.min_hole_area) {
            return Err(InvalidPolygonOptions::MinHoleArea {
                value: self.min_hole_area,
            });
        }
        match self.simplify_tolerance {
            Some(t) if !(t.is_finite() && t > 0.0) => {
                Err(InvalidPolygonOptions::SimplifyTolerance { value: t })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_broken_field() {
        assert_eq!(PolygonOptions::default().validate(), Ok(()));
        let bad = PolygonOptions {
            min_external_area: f64::NAN,
            ..PolygonOptions::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(InvalidPolygonOptions::MinExternalArea { .. })
        ));
        let bad = PolygonOptions {
            min_hole_area: -1.0,
            ..PolygonOptions::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(InvalidPolygonOptions::MinHoleArea { .. })
        ));
        let bad = PolygonOptions {
            simplify_tolerance: Some(0.0),
            ..PolygonOptions::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(InvalidPolygonOptions::SimplifyTolerance { .. })
        ));
    }
}
