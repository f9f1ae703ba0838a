//! Post-processing: binary mask to SpherosegV4 polygons (contract section 4).
//!
//! The pipeline the old service ran after the network, rebuilt without
//! OpenCV, with one change: the probabilities reach the original size by
//! bilinear resize before the threshold ([`threshold_upsampled`]) instead of
//! a nearest-neighbour resize of the thresholded mask
//! ([`Mask::resize_nearest`], OpenCV `INTER_NEAREST`, still available), so
//! outlines follow the edge at full resolution. Then 3x3 opening then
//! closing ([`open_close_3x3`], Serra 1982), Suzuki & Abe (1985) border
//! following ([`find_contours`], as `findContours(RETR_TREE,
//! CHAIN_APPROX_NONE)`), area filtering and JSON shaping
//! ([`extract_polygons`]), with optional Ramer-Douglas-Peucker simplification
//! ([`simplify_closed`]). Before the threshold, regions the network is never
//! confident about are dropped ([`suppress_unconfirmed`], hysteresis).
//! [`rasterize_polygons`] is the inverse used by tests
//! and evaluation; its module doc states the exact fill rule.

mod contours;
mod hysteresis;
mod mask;
mod morphology;
mod options;
mod polygons;
mod raster;
mod simplify;
#[cfg(test)]
mod tests;
mod upsample;

pub use contours::{contour_area, find_contours, Contour};
pub use hysteresis::suppress_unconfirmed;
pub use mask::Mask;
pub use morphology::{dilate_3x3, erode_3x3, open_close_3x3};
pub use options::{InvalidPolygonOptions, PolygonOptions};
pub use polygons::{extract_polygons, Point, Polygon, PolygonType, COLORS};
pub use raster::rasterize_polygons;
pub use simplify::simplify_closed;
pub use upsample::threshold_upsampled;
