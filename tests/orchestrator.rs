//! The deployment files on the real Docker engine: `compose/docker-compose.yml` scaled with
//! `docker-compose up --scale ml=N`, and `deploy/swarm/stack.yml` with `docker stack deploy`
//! and `docker service scale/update`. Both run the enrolment CA, the RabbitMQ image built
//! here and the nodes from the images `scripts/docker-image.sh` builds with the binary
//! under test.
//!
//! Each stack goes 3 -> 5 -> 2 replicas, then (swarm) through a rolling update, then loses
//! one container to `docker kill -s KILL`, under HTTP load from `spheromesh loadtest` in a
//! container on the stack's network (`http://ml:5002`: any replica is an entry) and under a
//! backend-like RabbitMQ publisher whose callbacks the fake backend validates against the
//! contract. Checked: no failed HTTP request besides explicit 503s (in the kill phase a
//! request whose connection broke is sent once more, and counted), every task exactly one
//! callback, every scaled-in or updated replica exits 0 after draining.
//!
//! The nodes run the `synthetic:MS` engine (a labelled test double that takes MS ms and
//! returns no polygons): the subject is orchestration, placement and drain, and two cores
//! cannot run five real models beside the load. One request with the shipped model checks
//! that the image's real engine serves.
//!
//! Needs Docker (and root for `docker swarm init`); under `CI=true` their absence fails.

#[path = "chaos/broker.rs"]
#[allow(dead_code)]
mod broker;
#[path = "orchestrator/docker.rs"]
mod docker;
mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use docker::{docker, run, Load};

/// One stack at a time: they share the machine's two cores and Docker.
static ONE_STACK: Mutex<()> = Mutex::new(());

const MODEL: &str = "synthetic:200";
/// HTTP tasks per second offered in every phase (2 replicas hold 20/s with 2 slots each).
const HTTP_RATE: f64 = 8.0;
/// A broker task every this long (5/s).
const PUBLISH_EVERY: Duration = Duration::from_millis(200);
const QUEUE: &str = "segmentation_tasks";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What differs between compose and swarm.
trait Stack {
    fn name(&self) -> &str;
    /// Label that every `ml` replica's container carries.
    fn ml_label(&self) -> String;
    /// Label that every container of the stack carries.
    fn stack_label(&self) -> String;
    /// The network a load container joins to reach `ml`.
    fn network(&self) -> String;
    /// The host address containers reach the fake backend at.
    fn host_from_containers(&self) -> String;
    fn scale(&self, replicas: usize);
    /// Whether the orchestrator has a rolling update of every replica.
    fn has_rolling_update(&self) -> bool;
    fn rolling_update(&self);
    fn down(&self);
}

/// Secrets and settings every stack gets from the environment.
struct Settings {
    envs: Vec<(String, String)>,
    rabbit_url: String,
    uploads: tempfile::TempDir,
}

fn settings(rabbit_port: u16) -> Settings {
    let uploads = tempfile::tempdir().expect("uploads dir");
    support::write_png(uploads.path(), "proj/a.png", 96, 96);
    // The nodes run as uid 10001 and read the uploads volume.
    run(Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(uploads.path()));
    let password = "e2e-test-only-password";
    let explicit = vec![
        ("SPHEROMESH_CLUSTER_KEY", docker::secret(&["certs", "key"])),
        ("SPHEROMESH_JOIN_TOKEN", docker::secret(&["ca", "token"])),
        ("RABBITMQ_USER", "spheromesh".to_owned()),
        ("RABBITMQ_PASS", password.to_owned()),
        ("RABBITMQ_HOST_PORT", rabbit_port.to_string()),
        ("RABBITMQ_BIND", "0.0.0.0".to_owned()),
        ("MODEL_PATH", MODEL.to_owned()),
        ("MAX_CONCURRENT_TASKS", "2".to_owned()),
        ("QUEUE_LIMIT", "8".to_owned()),
        ("RABBITMQ_PREFETCH_COUNT", "2".to_owned()),
        ("DRAIN_GRACE_SECS", "20".to_owned()),
        ("DRAIN_LISTEN_SECS", "2".to_owned()),
        ("UPLOADS_DIR", uploads.path().to_string_lossy().into_owned()),
    ];
    // Every other variable the stack files read is blanked, so the files' defaults apply
    // whatever the caller's shell exports: the test script exports RABBITMQ_URL for the host
    // broker, which would point every replica at 127.0.0.1 inside its container.
    let mut envs: Vec<(String, String)> = stack_variables()
        .into_iter()
        .map(|name| (name, String::new()))
        .collect();
    envs.extend(explicit.into_iter().map(|(k, v)| (k.to_owned(), v)));
    Settings {
        envs,
        rabbit_url: format!("amqp://spheromesh:{password}@127.0.0.1:{rabbit_port}/%2f"),
        uploads,
    }
}

/// The names of the `${NAME...}` variables the compose and stack files read.
fn stack_variables() -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for file in ["compose/docker-compose.yml", "deploy/swarm/stack.yml"] {
        let text = std::fs::read_to_string(root().join(file)).expect("stack file");
        for (start, _) in text.match_indices("${") {
            let name: String = text[start + 2..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    assert!(names.contains("RABBITMQ_URL"), "{names:?}");
    names
}

/// The scenario both stacks go through.
fn scale_under_load(stack: &dyn Stack, settings: &Settings) {
    let ml = stack.ml_label();
    let (first, took) = docker::wait_mesh(&ml, 3, Duration::from_secs(240));
    eprintln!(
        "{}: 3 replicas enrolled, ready and meshed {took:.1?} after deploy",
        stack.name()
    );

    // One real segmentation: the image's shipped model answers with polygons.
    let real = run(Command::new("docker").args([
        "run",
        "--rm",
        "-v",
        &format!("{}:/ex:ro", root().join("examples").display()),
        docker::IMAGE,
        "segment",
        "/ex/brightfield.png",
    ]));
    assert!(
        real.contains("\"polygons\""),
        "shipped model answered {real}"
    );

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let backend = runtime.block_on(support::FakeBackend::start_on(
        "0.0.0.0:0".parse().expect("addr"),
    ));
    let callback_host = stack.host_from_containers();
    let port = backend.addr.port();
    let progress = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = runtime.spawn(broker::publish_like_the_backend(
        settings.rabbit_url.clone(),
        QUEUE.to_owned(),
        move |image| format!("http://{callback_host}:{port}/api/images/{image}/segmentation"),
        "proj/a.png".to_owned(),
        PUBLISH_EVERY,
        Arc::clone(&progress),
        Arc::clone(&stop),
    ));
    let network = stack.network();

    // 3 -> 5: the new replicas enrol, join and take work.
    let load = Load::start(&network, HTTP_RATE, 200, false);
    std::thread::sleep(Duration::from_secs(5));
    let asked = Instant::now();
    stack.scale(5);
    let (five, took) = docker::wait_mesh(&ml, 5, Duration::from_secs(120));
    let fresh: Vec<String> = five
        .iter()
        .filter(|c| !first.contains(c))
        .cloned()
        .collect();
    let to_work = docker::wait_taking_work(&fresh, asked, Duration::from_secs(60));
    eprintln!(
        "{}: scale 3 -> 5: mesh of 5 {took:.1?} after the command returned, every new \
         replica ran a task {to_work:.1?} after the command was given",
        stack.name()
    );
    load.finish(&format!("{}: scale 3 -> 5", stack.name()));

    // 5 -> 2: the removed replicas drain and exit 0, no request fails.
    let load = Load::start(&network, HTTP_RATE, 200, false);
    std::thread::sleep(Duration::from_secs(5));
    let since = docker::unix_now();
    let asked = Instant::now();
    stack.scale(2);
    let (two, took) = docker::wait_mesh(&ml, 2, Duration::from_secs(120));
    eprintln!(
        "{}: scale 5 -> 2: mesh of 2 {took:.1?} after the command returned",
        stack.name()
    );
    load.finish(&format!("{}: scale 5 -> 2", stack.name()));
    std::thread::sleep(Duration::from_secs(2));
    let gone = docker::deaths(&ml, since, docker::unix_now());
    report_exits(stack.name(), "scale 5 -> 2", &gone, 3, asked);

    // Rolling update (swarm): every replica replaced one by one, no request fails.
    let mut survivors = two;
    if stack.has_rolling_update() {
        let load = Load::start(&network, HTTP_RATE, 240, false);
        std::thread::sleep(Duration::from_secs(3));
        let since = docker::unix_now();
        let asked = Instant::now();
        stack.rolling_update();
        let (after, took) = docker::wait_mesh(&ml, 2, Duration::from_secs(120));
        eprintln!(
            "{}: rolling update done, mesh of 2 {took:.1?} after the command returned",
            stack.name()
        );
        load.finish(&format!("{}: rolling update", stack.name()));
        std::thread::sleep(Duration::from_secs(2));
        let replaced = docker::deaths(&ml, since, docker::unix_now());
        report_exits(stack.name(), "rolling update", &replaced, 2, asked);
        survivors = after;
    }

    // kill -9 one replica: its restart policy (compose) or the service (swarm) brings one back;
    // requests whose connection broke are sent once more.
    let load = Load::start(&network, HTTP_RATE, 160, true);
    std::thread::sleep(Duration::from_secs(5));
    let restarts = docker::restart_count(&survivors[0]);
    let killed = Instant::now();
    docker::crash(&survivors[0]);
    docker::wait_crashed(&survivors[0], restarts, Duration::from_secs(10));
    docker::wait_mesh(&ml, 2, Duration::from_secs(120));
    eprintln!(
        "{}: kill -9: mesh of 2 again {:.1?} after the kill",
        stack.name(),
        killed.elapsed()
    );
    load.finish(&format!("{}: kill -9", stack.name()));

    stop.store(true, Ordering::Relaxed);
    let published = runtime.block_on(publisher).expect("publisher");
    let report = runtime.block_on(broker::check_callbacks(
        stack.name(),
        &backend,
        &published,
        Duration::from_secs(120),
    ));
    assert!(report.tasks > 100, "only {} broker tasks", report.tasks);
    assert_eq!(report.failed, 0, "{}: broker tasks failed", stack.name());
    assert_eq!(
        report.duplicates,
        0,
        "{}: every task exactly one callback",
        stack.name()
    );
}

fn report_exits(stack: &str, phase: &str, gone: &[docker::Death], expected: usize, asked: Instant) {
    eprintln!(
        "{stack}: {phase}: {} replicas ended ({:.1?} after the command): {:?}",
        gone.len(),
        asked.elapsed(),
        gone.iter()
            .map(|d| (d.name.as_str(), d.exit_code, d.drain))
            .collect::<Vec<_>>()
    );
    assert!(
        gone.len() >= expected,
        "{stack}: {phase}: {} replicas ended, expected {expected}",
        gone.len()
    );
    for death in gone {
        assert_eq!(
            death.exit_code, 0,
            "{stack}: {phase}: {} exited {} (not drained)",
            death.name, death.exit_code
        );
    }
}

// ---- compose -----------------------------------------------------------------------------

struct Compose {
    project: String,
    envs: Vec<(String, String)>,
}

impl Compose {
    fn cmd(&self) -> Command {
        let mut cmd = Command::new("docker-compose");
        cmd.args(["-p", &self.project, "-f"])
            .arg(root().join("compose/docker-compose.yml"))
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }
}

impl Stack for Compose {
    fn name(&self) -> &str {
        "compose"
    }
    fn ml_label(&self) -> String {
        // `docker ps` ANDs repeated label filters, not comma-joined ones: the service label
        // is enough with one project up at a time (the test's own project name).
        "com.docker.compose.service=ml".to_owned()
    }
    fn stack_label(&self) -> String {
        format!("com.docker.compose.project={}", self.project)
    }
    fn network(&self) -> String {
        format!("{}_default", self.project)
    }
    fn host_from_containers(&self) -> String {
        docker(&[
            "network",
            "inspect",
            &self.network(),
            "-f",
            "{{(index .IPAM.Config 0).Gateway}}",
        ])
        .trim()
        .to_owned()
    }
    fn scale(&self, replicas: usize) {
        run(self
            .cmd()
            .args(["up", "-d", "--no-recreate", "--scale"])
            .arg(format!("ml={replicas}")));
    }
    fn has_rolling_update(&self) -> bool {
        false
    }
    fn rolling_update(&self) {
        unreachable!("docker-compose has no rolling update")
    }
    fn down(&self) {
        let _ = self.cmd().args(["down", "-v", "--remove-orphans"]).output();
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if std::thread::panicking() {
            docker::dump(&self.stack_label());
        }
        self.down();
    }
}

/// Waits for the machine's one stack slot, then builds the images; `None` when there is
/// no Docker engine and the test may skip (never under `CI=true`).
fn one_stack_with_images() -> Option<std::sync::MutexGuard<'static, ()>> {
    let one = ONE_STACK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !docker::engine_or_skip() {
        return None;
    }
    docker::build_images(&root());
    Some(one)
}

#[test]
fn compose_scales_3_5_2_and_survives_a_kill_under_http_and_broker_load() {
    let Some(_one) = one_stack_with_images() else {
        return;
    };
    let settings = settings(15673);
    let stack = Compose {
        project: "spheromesh-e2e".to_owned(),
        envs: settings.envs.clone(),
    };
    stack.down();
    run(stack.cmd().args(["up", "-d", "--scale", "ml=3"]));
    scale_under_load(&stack, &settings);
    drop(settings.uploads);
}

// ---- swarm -------------------------------------------------------------------------------

/// Leaves the swarm on drop if this test created it.
struct SwarmGuard {
    created: bool,
}

impl SwarmGuard {
    fn join() -> Self {
        let state = docker(&["info", "-f", "{{.Swarm.LocalNodeState}}"]);
        if state.trim() == "active" {
            return SwarmGuard { created: false };
        }
        let ip = run(Command::new("hostname").arg("-I"));
        let ip = ip
            .split_whitespace()
            .next()
            .expect("an address for the swarm");
        docker(&["swarm", "init", "--advertise-addr", ip]);
        SwarmGuard { created: true }
    }
}

impl Drop for SwarmGuard {
    fn drop(&mut self) {
        let keep = std::thread::panicking() && std::env::var_os("E2E_KEEP").is_some();
        if self.created && !keep {
            let _ = Command::new("docker")
                .args(["swarm", "leave", "--force"])
                .output();
        }
    }
}

struct Swarm {
    stack: String,
    envs: Vec<(String, String)>,
}

impl Swarm {
    fn service(&self) -> String {
        format!("{}_ml", self.stack)
    }
    fn deploy(&self) {
        run(Command::new("docker")
            .args(["stack", "deploy", "-c"])
            .arg(root().join("deploy/swarm/stack.yml"))
            .arg(&self.stack)
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str()))));
    }
}

impl Stack for Swarm {
    fn name(&self) -> &str {
        "swarm"
    }
    fn ml_label(&self) -> String {
        format!("com.docker.swarm.service.name={}", self.service())
    }
    fn stack_label(&self) -> String {
        format!("com.docker.stack.namespace={}", self.stack)
    }
    fn network(&self) -> String {
        let names = docker(&[
            "network",
            "ls",
            "--filter",
            &format!("label=com.docker.stack.namespace={}", self.stack),
            "--filter",
            "driver=overlay",
            "--format",
            "{{.Name}}",
        ]);
        names
            .lines()
            .next()
            .unwrap_or_else(|| panic!("no overlay network of stack {}", self.stack))
            .to_owned()
    }
    fn host_from_containers(&self) -> String {
        docker(&[
            "network",
            "inspect",
            "docker_gwbridge",
            "-f",
            "{{(index .IPAM.Config 0).Gateway}}",
        ])
        .trim()
        .to_owned()
    }
    fn scale(&self, replicas: usize) {
        docker(&[
            "service",
            "scale",
            // Detached: the caller waits for the mesh itself, and the time a new replica
            // takes to run work is measured from the command, not from swarm's
            // convergence check (which waits a further 5 s monitor period).
            "--detach=true",
            &format!("{}={replicas}", self.service()),
        ]);
    }
    fn has_rolling_update(&self) -> bool {
        true
    }
    fn rolling_update(&self) {
        docker(&[
            "service",
            "update",
            "--detach=false",
            "--force",
            &self.service(),
        ]);
    }
    fn down(&self) {
        if std::thread::panicking() && std::env::var_os("E2E_KEEP").is_some() {
            eprintln!("E2E_KEEP: stack {} left up", self.stack);
            return;
        }
        let _ = Command::new("docker")
            .args(["stack", "rm", &self.stack])
            .output();
        // `stack rm` returns before the containers and networks are gone.
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until && !docker::containers(&self.stack_label()).is_empty() {
            std::thread::sleep(Duration::from_millis(500));
        }
        std::thread::sleep(Duration::from_secs(2));
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker volume ls -q --filter label=com.docker.stack.namespace={} | xargs -r docker volume rm",
                self.stack
            ))
            .output();
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Every task of every service, failed ones with their error: a task that failed
            // to start may have left its address behind in the service's DNS answer.
            let _ = Command::new("docker")
                .args(["stack", "ps", "--no-trunc", &self.stack])
                .status();
            docker::dump(&self.stack_label());
        }
        self.down();
    }
}

#[test]
fn swarm_scales_rolls_and_survives_a_kill_under_http_and_broker_load() {
    let Some(_one) = one_stack_with_images() else {
        return;
    };
    let _swarm = SwarmGuard::join();
    let settings = settings(15674);
    let stack = Swarm {
        stack: "smesh-e2e".to_owned(),
        envs: settings.envs.clone(),
    };
    stack.down();
    stack.deploy();
    scale_under_load(&stack, &settings);
    drop(settings.uploads);
}
