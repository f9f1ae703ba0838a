//! The gauges a node derives once per gossip round besides its load: its own process CPU and
//! memory, and the mesh-wide autoscaling signal.

use std::time::{Duration, Instant};

use spheromesh_mesh::membership::Peer;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use crate::node::{metrics, Dispatcher};
use crate::scaling::{raw_desired, MeshLoad, ScalingSettings, Stabiliser};

/// CPU use is measured between two samples; closer samples are noise.
const PROCESS_SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Samples the process and computes the desired replicas.
#[derive(Debug)]
pub(crate) struct Observer {
    settings: ScalingSettings,
    stabiliser: Stabiliser,
    system: System,
    pid: Option<Pid>,
    cores: f64,
    last_sample: Option<Instant>,
}

impl Observer {
    pub(crate) fn new(settings: ScalingSettings) -> Self {
        Self {
            stabiliser: Stabiliser::new(settings.scale_down_window),
            settings,
            system: System::new(),
            pid: sysinfo::get_current_pid().ok(),
            cores: std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
            last_sample: None,
        }
    }

    /// Refreshes the process gauges (at most once a second) and the scaling gauges.
    pub(crate) fn tick(&mut self, dispatcher: &Dispatcher, peers: &[Peer], own_depth: Option<u64>) {
        let now = Instant::now();
        if self
            .last_sample
            .is_none_or(|at| now.duration_since(at) >= PROCESS_SAMPLE_EVERY)
        {
            self.last_sample = Some(now);
            self.sample_process();
        }
        let load = mesh_load(dispatcher, peers, own_depth);
        let desired = self
            .stabiliser
            .desired(now, raw_desired(&load, &self.settings));
        metrics::set_scaling(load.replicas, load.slot_utilisation(), desired);
    }

    fn sample_process(&mut self) {
        let Some(pid) = self.pid else { return };
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            false,
            ProcessRefreshKind::nothing().with_cpu().with_memory(),
        );
        if let Some(process) = self.system.process(pid) {
            // sysinfo reports percent of one core; the gauge is a share of all of them.
            let cpu = f64::from(process.cpu_usage()) / 100.0 / self.cores;
            metrics::set_process(cpu, process.memory());
        }
    }
}

/// This node and its ready peers as the scaling rule sees them.
pub(crate) fn mesh_load(
    dispatcher: &Dispatcher,
    peers: &[Peer],
    own_depth: Option<u64>,
) -> MeshLoad {
    let own = dispatcher.load_report();
    let mut load = MeshLoad {
        replicas: 1,
        queue_depth: own_depth.unwrap_or(0),
        active: u64::from(own.active),
        slots: u64::from(own.capacity),
    };
    for peer in peers.iter().filter(|p| p.view.ready && !p.view.draining) {
        load.replicas += 1;
        load.active += u64::from(peer.view.active);
        load.slots += u64::from(peer.view.capacity);
        load.queue_depth = load.queue_depth.max(peer.queue_depth.unwrap_or(0));
    }
    load
}
