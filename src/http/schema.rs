//! The bodies the HTTP API answers, typed so `/openapi.json` describes exactly what the
//! handlers send. Field names are the old service's where the contract names them.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Every error answer: a message for people and a stable code for programs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, in words.
    pub error: String,
    /// A stable code: `invalid_request`, `payload_too_large`, `unsupported_media_type`,
    /// `bad_image`, `busy`, `shutting_down`, `deadline_exceeded`, `unauthorized`,
    /// `not_found`, `method_not_allowed`, `path_outside_uploads_root`, `image_not_found`,
    /// `internal`, ...
    pub code: String,
}

/// Query parameters of `POST /segment`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SegmentQuery {
    /// Mask threshold on the model's probability, strictly between 0 and 1 (default 0.5).
    #[param(exclusive_minimum = 0.0, exclusive_maximum = 1.0)]
    pub(crate) threshold: Option<f64>,
    /// Ramer-Douglas-Peucker tolerance in pixels (default: every border pixel).
    #[param(minimum = 0.0)]
    pub(crate) simplify: Option<f64>,
    /// Deadline of this request in milliseconds, at least 1000 (capped by the node's request
    /// timeout). A shorter one is refused: no placement and model run fits it reliably.
    #[param(minimum = 1000)]
    pub(crate) timeout_ms: Option<u64>,
}

/// `POST /segment` with JSON: an image already on the shared uploads volume.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct PathRequest {
    /// Path of the image, relative to the uploads root (or absolute inside it).
    #[schema(min_length = 1)]
    pub(crate) image_path: String,
    /// Mask threshold, strictly between 0 and 1; the query parameter wins.
    #[schema(exclusive_minimum = 0.0, exclusive_maximum = 1.0)]
    pub(crate) threshold: Option<f64>,
}

/// `POST /segment` as multipart: the image as the one field `image` (any other field is
/// refused with 400).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documents the multipart form; axum reads it field by field
pub(crate) struct SegmentUpload {
    /// The image file (PNG, JPEG, TIFF or BMP).
    #[schema(value_type = String, format = Binary)]
    pub(crate) image: Vec<u8>,
}

/// One point of a polygon, in image pixels.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documents the polygon shape the engine serialises
pub(crate) struct PointDoc {
    /// Column, 0 at the left.
    pub(crate) x: i32,
    /// Row, 0 at the top.
    pub(crate) y: i32,
}

/// One polygon of a segmentation.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documents the polygon shape the engine serialises
pub(crate) struct PolygonDoc {
    /// `polygon-xxxxxxxx` for outlines, `hole-xxxxxxxx` for holes.
    pub(crate) id: String,
    /// Border pixels in tracing order.
    pub(crate) points: Vec<PointDoc>,
    /// `external` or `internal`.
    #[schema(rename = "type")]
    pub(crate) kind: String,
    /// The enclosing outline's id; holes only.
    #[schema(rename = "parentId")]
    pub(crate) parent_id: Option<String>,
    /// `spheroid` or `hole`.
    pub(crate) class: String,
    /// Display colour `#RRGGBB`.
    pub(crate) color: String,
}

/// The answer of `POST /segment`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SegmentResponse {
    /// Id of this task (logs carry it).
    pub task_id: String,
    /// Outlines and holes.
    #[schema(value_type = Vec<PolygonDoc>)]
    pub polygons: serde_json::Value,
    /// Seconds from admission to result on the node that ran it.
    pub processing_time: f64,
    /// The node that ran the model.
    pub processed_by: String,
    /// The node that took the request.
    pub entry_node: String,
    /// Mesh hops the task made (0: run where it entered).
    pub hops: u8,
    /// Width of the image in pixels.
    pub image_width: u32,
    /// Height of the image in pixels.
    pub image_height: u32,
    /// When the answer was made, RFC 3339.
    pub timestamp: String,
}

/// The answer of `/health/live` and `/health/ready`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ProbeStatus {
    /// `alive`, `gossip_stuck`, `gossip_stopped`, `ready` or `not_ready`.
    pub(crate) status: String,
    /// For `gossip_stuck`: seconds since the membership view was last refreshed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) since_secs: Option<f64>,
}

/// The answer of `GET /health`: the old service's keys plus the mesh.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct HealthResponse {
    /// `healthy`, `degraded` (broker down or no room anywhere now) or `unhealthy`.
    pub(crate) status: String,
    /// RFC 3339.
    pub(crate) timestamp: String,
    /// This node.
    pub(crate) instance_id: String,
    /// The `--model` value.
    pub(crate) model_path: String,
    /// Whether the model file exists (always true for the test double).
    pub(crate) model_exists: bool,
    /// The model.
    pub(crate) model: ModelHealth,
    /// Host resources.
    pub(crate) resources: Resources,
    /// Work on this node.
    pub(crate) processing: Processing,
    /// The mesh as this node sees it.
    pub(crate) mesh: MeshHealth,
}

/// `/health` `model`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ModelHealth {
    /// The `--model` value.
    pub(crate) path: String,
    /// Whether the file exists.
    pub(crate) exists: bool,
    /// File size in MiB.
    pub(crate) size_mb: Option<f64>,
    /// Network, input size and device.
    pub(crate) engine: String,
}

/// `/health` `resources`: the host's CPU, memory and disk.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Resources {
    /// Host CPU use, percent.
    pub(crate) cpu_percent: f32,
    /// Host memory in use, percent.
    pub(crate) memory_percent: f64,
    /// Host memory available, MiB.
    pub(crate) memory_available_mb: f64,
    /// Disk holding the working folder, percent used.
    pub(crate) disk_percent: f64,
    /// Its free space, GB.
    pub(crate) disk_free_gb: f64,
}

/// `/health` `processing`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Processing {
    /// Tasks running or queued here.
    pub(crate) active_tasks: u32,
    /// Slots.
    pub(crate) max_concurrent: u32,
    /// Queue room beyond the slots.
    pub(crate) queue_limit: u32,
    /// Whether the RabbitMQ consumer holds a connection.
    pub(crate) rabbitmq_connected: bool,
    /// The consumer's prefetch bound.
    pub(crate) prefetch_count: u32,
}

/// `/health` `mesh`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct MeshHealth {
    /// This node's gossip generation.
    pub(crate) generation: u64,
    /// Whether this node drains.
    pub(crate) draining: bool,
    /// Live peers.
    pub(crate) peers: usize,
    /// Ready peers.
    pub(crate) ready_peers: usize,
    /// Tasks the mesh could start at once.
    pub(crate) startable_now: u32,
    /// Whether any node has room now.
    pub(crate) room_now: bool,
    /// This node's load.
    pub(crate) load: LoadBody,
}

/// A node's load.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct LoadBody {
    /// Tasks running or queued.
    pub(crate) active: u32,
    /// Slots.
    pub(crate) capacity: u32,
    /// Queue room beyond the slots.
    pub(crate) queue_limit: u32,
    /// Mean task time, ms; absent until measured.
    pub(crate) service_ewma_ms: Option<f64>,
}
