//! Bounded local execution: `capacity` slots run tasks, up to `queue_limit` more wait for
//! a slot, and anything beyond is refused at once (the caller answers busy).
//!
//! Admission is counted by an [`Admission`] guard that decrements on drop, so a task that
//! errors, panics or whose caller goes away can never leak a count. The guard and the slot
//! permit move into the blocking closure that runs the engine: a caller that stops waiting
//! frees nothing until the work really ends, so the published load never under-counts.
//!
//! The real model also takes a compute permit (`inference_threads`, default the core count)
//! so that more slots than cores queue instead of thrashing the CPU caches.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use spheromesh_mesh::membership::LoadReport;
use spheromesh_mesh::routing::LocalView;
use tokio::sync::Semaphore;

use super::engine::{Engine, EngineOutput};
use super::metrics;
use super::task::TaskError;

/// Weight of the newest sample in the service-time EWMA.
const EWMA_ALPHA: f64 = 0.2;

/// Sizes of an [`Executor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecutorLimits {
    /// Tasks run in parallel.
    pub capacity: u32,
    /// Tasks that may wait for a slot.
    pub queue_limit: u32,
    /// Model runs allowed on the CPU at once (ignored by the synthetic engine).
    pub inference_threads: u32,
}

/// Runs admitted tasks on this node.
#[derive(Debug)]
pub struct Executor {
    engine: Engine,
    limits: ExecutorLimits,
    admitted: AtomicU32,
    slots: Arc<Semaphore>,
    compute: Arc<Semaphore>,
    draining: AtomicBool,
    service_ewma: Mutex<Option<Duration>>,
}

/// A counted place in this node's slots or queue; dropping it gives the place back.
#[derive(Debug)]
#[must_use = "dropping the admission gives the place back at once"]
pub struct Admission {
    executor: Arc<Executor>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let before = self.executor.admitted.fetch_sub(1, Ordering::AcqRel);
        metrics::set_active(before.saturating_sub(1));
    }
}

/// A finished local run.
#[derive(Debug, Clone)]
pub struct LocalRun {
    /// What the engine produced.
    pub output: EngineOutput,
    /// Time spent waiting for a slot.
    pub queue_wait: Duration,
    /// Time from admission to result (queue wait plus compute).
    pub total: Duration,
}

impl Executor {
    /// An idle executor running `engine`.
    pub fn new(engine: Engine, limits: ExecutorLimits) -> Arc<Self> {
        let capacity = limits.capacity.max(1);
        let threads = limits.inference_threads.max(1);
        Arc::new(Self {
            engine,
            limits: ExecutorLimits {
                capacity,
                inference_threads: threads,
                ..limits
            },
            admitted: AtomicU32::new(0),
            slots: Arc::new(Semaphore::new(capacity as usize)),
            compute: Arc::new(Semaphore::new(threads as usize)),
            draining: AtomicBool::new(false),
            service_ewma: Mutex::new(None),
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The configured sizes.
    pub fn limits(&self) -> ExecutorLimits {
        self.limits
    }

    /// Tasks admitted (running plus waiting).
    pub fn active(&self) -> u32 {
        self.admitted.load(Ordering::Acquire)
    }

    /// Free slots: tasks that would start now without waiting.
    pub fn free_slots(&self) -> u32 {
        if self.is_draining() {
            return 0;
        }
        self.limits.capacity.saturating_sub(self.active())
    }

    /// Stops admitting tasks (work already admitted still runs).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether [`start_draining`](Self::start_draining) was called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// The mean task time, once measured.
    pub fn service_ewma(&self) -> Option<Duration> {
        *self
            .service_ewma
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// This node's load in routing terms. A draining node reports no capacity, so routing
    /// never keeps work here.
    pub fn local_view(&self) -> LocalView {
        LocalView {
            active: self.active(),
            capacity: if self.is_draining() {
                0
            } else {
                self.limits.capacity
            },
            queue_limit: self.limits.queue_limit,
            service_ewma: self.service_ewma(),
        }
    }

    /// The load this node gossips.
    pub fn load_report(&self) -> LoadReport {
        LoadReport {
            active: self.active(),
            capacity: self.limits.capacity,
            queue_limit: self.limits.queue_limit,
            service_ewma: self.service_ewma(),
            queue_depth: None,
            entry: false,
        }
    }

    /// Starts the service-time EWMA at `measured` (the warm-up pass of a real model) if no
    /// task has been measured yet, so peers place work by this node's real speed from the
    /// first task on: a GPU node advertises its own service time instead of being taken
    /// for as slow as everyone else's default.
    pub fn seed_service(&self, measured: Duration) {
        let mut ewma = self
            .service_ewma
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        ewma.get_or_insert(measured);
    }

    /// Takes a place for one task if a slot or queue place is free and the node is not
    /// draining; `None` means the caller must send the task elsewhere or answer busy.
    pub fn try_admit(self: &Arc<Self>) -> Option<Admission> {
        self.admit_below(self.limits.capacity + self.limits.queue_limit)
    }

    /// Takes a place if fewer than `limit` tasks are admitted and the node is not draining.
    fn admit_below(self: &Arc<Self>, limit: u32) -> Option<Admission> {
        if self.is_draining() {
            return None;
        }
        self.admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|before| {
                metrics::set_active(before + 1);
                Admission {
                    executor: Arc::clone(self),
                }
            })
    }

    /// Waits for a slot (until `deadline`), then runs the engine on a blocking thread.
    ///
    /// # Errors
    ///
    /// [`TaskError::DeadlineExceeded`] if no slot freed up in time or the deadline passed
    /// before compute started, else the engine's error.
    pub async fn run(
        self: &Arc<Self>,
        admission: Admission,
        image: Vec<u8>,
        threshold: f32,
        simplify_tolerance: Option<f64>,
        deadline: Instant,
    ) -> Result<LocalRun, TaskError> {
        let admitted_at = Instant::now();
        let slot =
            tokio::time::timeout_at(deadline.into(), Arc::clone(&self.slots).acquire_owned())
                .await
                .map_err(|_| TaskError::DeadlineExceeded)?
                .map_err(|_| TaskError::ShuttingDown)?;
        let queue_wait = admitted_at.elapsed();
        metrics::record_queue_wait(queue_wait);
        let compute = if self.engine.uses_compute() {
            Some(
                tokio::time::timeout_at(deadline.into(), Arc::clone(&self.compute).acquire_owned())
                    .await
                    .map_err(|_| TaskError::DeadlineExceeded)?
                    .map_err(|_| TaskError::ShuttingDown)?,
            )
        } else {
            None
        };
        let executor = Arc::clone(self);
        let outcome = tokio::task::spawn_blocking(move || {
            // Held until the work ends, even if the caller stops waiting.
            let _held = (admission, slot, compute);
            if Instant::now() >= deadline {
                return Err(TaskError::DeadlineExceeded);
            }
            let started = Instant::now();
            let result = executor.engine.run(&image, threshold, simplify_tolerance);
            executor.observe_service(started.elapsed());
            result
        })
        .await
        .map_err(|join| TaskError::Internal(format!("inference task failed: {join}")))?;
        Ok(LocalRun {
            output: outcome?,
            queue_wait,
            total: admitted_at.elapsed(),
        })
    }

    fn observe_service(&self, sample: Duration) {
        let mut ewma = self
            .service_ewma
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *ewma = Some(match *ewma {
            None => sample,
            Some(old) => old.mul_f64(1.0 - EWMA_ALPHA) + sample.mul_f64(EWMA_ALPHA),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spheromesh_inference::DecodeLimits;

    fn synthetic(ms: u64, capacity: u32, queue_limit: u32) -> Arc<Executor> {
        Executor::new(
            Engine::Synthetic {
                service: Some(Duration::from_millis(ms)),
                limits: DecodeLimits::default(),
            },
            ExecutorLimits {
                capacity,
                queue_limit,
                inference_threads: 1,
            },
        )
    }

    fn tiny_png() -> Vec<u8> {
        let mut out = Vec::new();
        image::GrayImage::new(4, 3)
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .expect("encode");
        out
    }

    #[test]
    fn admission_is_bounded_and_given_back_on_drop() {
        let ex = synthetic(0, 2, 1);
        let a = ex.try_admit().expect("1");
        let b = ex.try_admit().expect("2");
        let c = ex.try_admit().expect("3 (queue)");
        assert!(ex.try_admit().is_none(), "room is capacity + queue");
        assert_eq!(ex.active(), 3);
        assert_eq!(ex.free_slots(), 0);
        drop((a, b));
        assert_eq!(ex.active(), 1);
        assert_eq!(ex.free_slots(), 1);
        drop(c);
        assert_eq!(ex.active(), 0);
    }

    #[test]
    fn draining_admits_nothing_and_reports_no_capacity() {
        let ex = synthetic(0, 2, 1);
        ex.start_draining();
        assert!(ex.try_admit().is_none());
        assert_eq!(ex.local_view().capacity, 0);
        assert_eq!(ex.free_slots(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_measure_service_time_and_free_their_place() {
        let ex = synthetic(30, 1, 1);
        let deadline = Instant::now() + Duration::from_secs(5);
        let adm = ex.try_admit().expect("admit");
        let run = ex
            .run(adm, tiny_png(), 0.5, None, deadline)
            .await
            .expect("run");
        assert_eq!((run.output.width, run.output.height), (4, 3));
        assert!(ex.service_ewma().expect("measured") >= Duration::from_millis(30));
        assert_eq!(ex.active(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_caller_keeps_the_place_until_the_work_ends() {
        let ex = synthetic(300, 1, 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        let adm = ex.try_admit().expect("admit");
        let run = {
            let ex = Arc::clone(&ex);
            tokio::spawn(async move { ex.run(adm, tiny_png(), 0.5, None, deadline).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        run.abort();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(ex.active(), 1, "the blocking run still holds its place");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(ex.active(), 0, "given back when the work ended");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_task_past_its_deadline_fails_without_running() {
        let ex = synthetic(300, 1, 1);
        let long = Instant::now() + Duration::from_secs(5);
        let first = ex.try_admit().expect("first");
        let ex1 = Arc::clone(&ex);
        let running =
            tokio::spawn(async move { ex1.run(first, tiny_png(), 0.5, None, long).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = ex.try_admit().expect("queued");
        let short = Instant::now() + Duration::from_millis(50);
        let err = ex
            .run(second, tiny_png(), 0.5, None, short)
            .await
            .expect_err("deadline");
        assert_eq!(err, TaskError::DeadlineExceeded);
        running.await.expect("join").expect("first ran");
    }
}
