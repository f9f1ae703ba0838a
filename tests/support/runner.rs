//! **Test double** of the node's `TaskRunner` (the real one is the node's dispatcher).
//!
//! `SlotRunner` has `slots` execution slots (a semaphore), reports free slots through
//! `startable_now` (optionally over-reporting by `lie_extra`, to simulate stale peer
//! capacity), decodes the image for real with `spheromesh_inference::decode_rgb8` (so a
//! corrupt image really fails with `BadImage`), sleeps `work` per task instead of running
//! the model, and returns one fixed valid contract polygon sized to the image.
//! While waiting for a slot it honours `drain` like a draining node: queued tasks fail
//! with `ShuttingDown`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use spheromesh::node::{Policy, SegmentTask, TaskError, TaskResult, TaskRunner};
use spheromesh_inference::{decode_rgb8, DecodeLimits};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Test double: N slots, a fixed sleep per task, real decoding, a fixed polygon.
#[derive(Debug)]
pub struct SlotRunner {
    id: String,
    slots: Arc<Semaphore>,
    work: Duration,
    lie_extra: u32,
    drain: CancellationToken,
    running: AtomicU32,
    max_running: AtomicU32,
    /// Tasks that got a slot and were decoded (model runs, in the real node).
    pub runs: AtomicU64,
    /// Task ids in the order they got a slot.
    pub started: Mutex<Vec<String>>,
    /// When the first task got a slot.
    pub first_start: Mutex<Option<Instant>>,
    /// Sleep the image's width in milliseconds instead of `work` (drain benchmark).
    pub work_from_width: bool,
}

impl SlotRunner {
    pub fn new(id: &str, slots: u32, work: Duration) -> Self {
        Self {
            id: id.to_owned(),
            slots: Arc::new(Semaphore::new(slots as usize)),
            work,
            lie_extra: 0,
            drain: CancellationToken::new(),
            running: AtomicU32::new(0),
            max_running: AtomicU32::new(0),
            runs: AtomicU64::new(0),
            started: Mutex::new(Vec::new()),
            first_start: Mutex::new(None),
            work_from_width: false,
        }
    }

    /// Each task sleeps its image's width in milliseconds (the drain benchmark's images
    /// encode the synthetic duration that way: `SegmentTask` carries no parameters).
    pub fn width_is_work(mut self) -> Self {
        self.work_from_width = true;
        self
    }

    /// Over-report free capacity by `extra` (a peer that gossip still shows as idle).
    pub fn lying(mut self, extra: u32, drain: CancellationToken) -> Self {
        self.lie_extra = extra;
        self.drain = drain;
        self
    }

    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::SeqCst)
    }

    pub fn max_running(&self) -> u32 {
        self.max_running.load(Ordering::SeqCst)
    }
}

fn polygon(w: u32, h: u32) -> serde_json::Value {
    let (x0, y0, x1, y1) = (w / 4, h / 4, 3 * w / 4, 3 * h / 4);
    json!([{
        "id": "polygon-0a1b2c3d",
        "points": [{"x": x0, "y": y0}, {"x": x1, "y": y0}, {"x": x1, "y": y1}, {"x": x0, "y": y1}],
        "type": "external", "class": "spheroid", "color": "#FF5733"
    }])
}

impl TaskRunner for SlotRunner {
    fn instance_id(&self) -> &str {
        &self.id
    }

    fn startable_now(&self) -> u32 {
        self.slots.available_permits() as u32 + self.lie_extra
    }

    // A test double: it runs every task in its own slots, whatever the policy.
    async fn run(&self, task: SegmentTask, _policy: Policy) -> Result<TaskResult, TaskError> {
        let t0 = Instant::now();
        // Acquired in the first poll when a slot is free, like the real executor's permit.
        let permit = tokio::select! {
            biased;
            p = Arc::clone(&self.slots).acquire_owned() => p.map_err(|_| TaskError::ShuttingDown)?,
            _ = self.drain.cancelled() => return Err(TaskError::ShuttingDown),
        };
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        self.started.lock().unwrap().push(task.task_id.clone());
        self.first_start
            .lock()
            .unwrap()
            .get_or_insert_with(Instant::now);
        let decoded = decode_rgb8(&task.image, &DecodeLimits::default());
        let out = match decoded {
            Ok(img) => {
                self.runs.fetch_add(1, Ordering::SeqCst);
                let work = if self.work_from_width {
                    Duration::from_millis(u64::from(img.width()))
                } else {
                    self.work
                };
                tokio::time::sleep(work).await;
                Ok(TaskResult {
                    polygons: polygon(img.width(), img.height()),
                    width: img.width(),
                    height: img.height(),
                    processing_time: t0.elapsed(),
                    processed_by: self.id.clone(),
                    entry_node: self.id.clone(),
                    hops: 0,
                })
            }
            Err(e) => Err(TaskError::BadImage(e.to_string())),
        };
        self.running.fetch_sub(1, Ordering::SeqCst);
        drop(permit);
        out
    }
}
