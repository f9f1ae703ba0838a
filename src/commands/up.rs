//! `spheromesh up`: a local mesh of N nodes in one command, with the shipped model.
//!
//! Creates a cluster CA, one certificate per node and a cluster key under `--state-dir`,
//! starts `spheromesh node` N times as child processes (node-1 is every node's seed),
//! waits until each says it is ready, sends the example image once through node-1, and
//! prints each node's URL and a request to paste. Ctrl-C (or SIGTERM) drains every node.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use spheromesh_mesh::security::{generate_ca, issue_node_cert, ClusterKey};

/// Arguments of `spheromesh up`.
#[derive(Debug, clap::Args)]
pub(crate) struct UpArgs {
    /// Number of nodes.
    #[arg(long, short = 'n', default_value_t = 3)]
    nodes: u16,
    /// HTTP port of node-1; node-i listens on base+i-1 (HTTP, and QUIC on UDP) and
    /// gossips on base+100+i-1.
    #[arg(long, default_value_t = 5002)]
    base_port: u16,
    /// Weights for every node (or `synthetic:MS`).
    #[arg(long, env = "MODEL_PATH", default_value = super::SHIPPED_MODEL)]
    model: String,
    /// Slots per node.
    #[arg(long, env = "MAX_CONCURRENT_TASKS", default_value_t = 2)]
    max_concurrent_tasks: u32,
    /// Folder for the CA, certificates and key (recreated on each start).
    #[arg(long, default_value = "target/spheromesh-up")]
    state_dir: PathBuf,
    /// Image sent once through node-1 when the mesh is up.
    #[arg(long, default_value = "examples/brightfield.png")]
    demo_image: PathBuf,
    /// Skip the demo request.
    #[arg(long)]
    no_demo: bool,
}

/// The children, killed on drop so a failed start leaves nothing behind.
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(crate) fn run(args: UpArgs) -> anyhow::Result<()> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let exe = std::env::current_exe().context("locating the spheromesh binary")?;
    let _ = std::fs::remove_dir_all(&args.state_dir);
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating {}", args.state_dir.display()))?;
    let ca = generate_ca("spheromesh-up").context("creating the cluster CA")?;
    ca.save(&args.state_dir).context("writing the CA")?;
    let key = ClusterKey::generate().context("generating the cluster key")?;
    let seed = format!("127.0.0.1:{}", args.base_port + 100);

    let mut nodes = Nodes(Vec::new());
    let mut urls = Vec::new();
    for i in 0..args.nodes {
        let name = format!("node-{}", i + 1);
        issue_node_cert(&ca, &name, &[])
            .and_then(|creds| creds.save(&args.state_dir))
            .with_context(|| format!("issuing {name}'s certificate"))?;
        let http = args.base_port + i;
        let gossip = args.base_port + 100 + i;
        let mut command = Command::new(&exe);
        // SAFETY: the closure runs in the forked child before exec and only makes the
        // async-signal-safe prctl(2) call; it touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                // If `up` dies without draining them (kill -9), its nodes go too.
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
            });
        }
        let child = command
            .arg("node")
            .args(["--instance-id", &name])
            .args(["--http-listen", &format!("127.0.0.1:{http}")])
            .args(["--quic-listen", &format!("127.0.0.1:{http}")])
            .args(["--gossip-listen", &format!("127.0.0.1:{gossip}")])
            .args(["--seeds", &seed])
            .args(["--model", &args.model])
            .args([
                "--max-concurrent-tasks",
                &args.max_concurrent_tasks.to_string(),
            ])
            .arg("--tls-dir")
            .arg(&args.state_dir)
            .env("SPHEROMESH_CLUSTER_KEY", key.to_hex())
            .env_remove("HOSTNAME")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        nodes.0.push(child);
        urls.push((name, format!("http://127.0.0.1:{http}")));
    }
    for (child, (name, _)) in nodes.0.iter_mut().zip(&urls) {
        wait_ready(child, name)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    for (_, url) in &urls {
        runtime.block_on(wait_for_membership(url, usize::from(args.nodes) - 1))?;
    }

    println!(
        "\nspheromesh: {} nodes up (Ctrl-C drains them all)",
        args.nodes
    );
    for (name, url) in &urls {
        println!("  {name}: {url}   ({url}/health, {url}/cluster, {url}/metrics)");
    }
    println!("\nSend an image to any node:");
    println!(
        "  curl -s -H 'Content-Type: image/png' --data-binary @{} {}/segment",
        args.demo_image.display(),
        urls[0].1
    );
    if !args.no_demo {
        runtime.block_on(demo(&urls[0].1, &args.demo_image))?;
    }

    runtime.block_on(spheromesh::runtime::shutdown_signal());
    println!("draining {} nodes...", nodes.0.len());
    for child in &nodes.0 {
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    for child in &mut nodes.0 {
        let status = child.wait().context("waiting for a node")?;
        if !status.success() {
            eprintln!("a node exited with {status}");
        }
    }
    nodes.0.clear();
    Ok(())
}

/// Reads the child's stdout until its `ready` line.
fn wait_ready(child: &mut Child, name: &str) -> anyhow::Result<()> {
    let stdout = child.stdout.take().context("node stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("\"event\":\"ready\"") => break,
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(error).context("reading node output"),
            None => bail!("{name} exited before it was ready (see its log above)"),
        }
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(())
}

/// Waits until the node at `url` sees `peers` ready peers.
async fn wait_for_membership(url: &str, peers: usize) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let cluster: serde_json::Value = client
            .get(format!("{url}/cluster"))
            .send()
            .await?
            .json()
            .await?;
        let ready = cluster["members"]
            .as_array()
            .map_or(0, |m| m.iter().filter(|p| p["status"] == "ready").count());
        if ready >= peers {
            return Ok(());
        }
        if Instant::now() > until {
            bail!("the mesh did not converge within 30 s ({ready} of {peers} peers ready)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn demo(url: &str, image: &PathBuf) -> anyhow::Result<()> {
    let bytes = std::fs::read(image).with_context(|| format!("reading {}", image.display()))?;
    let started = Instant::now();
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{url}/segment"))
        .header("content-type", "image/png")
        .body(bytes)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    println!(
        "\ndemo: {} -> {} polygons, processed by {} (entered at {}, {} hop), {:.0} ms",
        image.display(),
        answer["polygons"].as_array().map_or(0, Vec::len),
        answer["processed_by"],
        answer["entry_node"],
        answer["hops"],
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
