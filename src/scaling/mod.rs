//! The autoscaling signal, `spheromesh_desired_replicas`: how many nodes the mesh should
//! have, by the Kubernetes Horizontal Pod Autoscaler's rule, so an HPA, KEDA or a person
//! acts on one number (docs/DEPLOY.md, "Autoscaling").
//!
//! * per signal, `desired = ceil(current × metric / target)`, unless `metric / target` is
//!   within the tolerance of 1 (default 0.1), where `desired = current`;
//! * two signals, each a ratio to its target: RabbitMQ queue depth per replica, and slot
//!   demand (tasks running or queued over slots, mesh-wide); the larger recommendation wins;
//! * scale-down stabilisation: the answer is the highest recommendation of the last
//!   `scale_down_window` (default 300 s), so a dip does not remove nodes that the next burst
//!   needs, while a rise shows at once;
//! * clamped to `[min_replicas, max_replicas]`.
//!
//! Every node computes it from the same gossip, so every node reports (nearly) the same
//! number; a consumer takes the maximum over nodes.
//!
//! The formulas are pure functions of their inputs and time (`formula.rs`, property-tested);
//! `settings.rs` validates the targets.

mod formula;
mod settings;

pub use formula::{hpa_recommendation, raw_desired, MeshLoad, Stabiliser};
pub use settings::{ScalingError, ScalingSettings};
