//! The `spheromesh` binary end to end: real files in, real files out.

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_spheromesh"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "warn");
    c
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/brightfield.png")
}

#[test]
fn segment_writes_contract_json_mask_and_overlay() {
    let dir = tempfile::tempdir().unwrap();
    let (json, mask, overlay) = (
        dir.path().join("r.json"),
        dir.path().join("m.png"),
        dir.path().join("o.png"),
    );
    let out = bin()
        .args(["segment"])
        .arg(example())
        .args(["--threshold", "0.5", "--out"])
        .arg(&json)
        .arg("--mask")
        .arg(&mask)
        .arg("--overlay")
        .arg(&overlay)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let polys = v["polygons"].as_array().unwrap();
    assert!(!polys.is_empty(), "the example has spheroids");
    let mut last_external = None;
    for p in polys {
        let id = p["id"].as_str().unwrap();
        let kind = p["type"].as_str().unwrap();
        let hex = id.rsplit('-').next().unwrap();
        assert!(
            hex.len() == 8
                && hex
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "{id}"
        );
        match kind {
            "external" => {
                assert!(
                    id.starts_with("polygon-")
                        && p["class"] == "spheroid"
                        && p.get("parentId").is_none()
                );
                last_external = Some(id.to_owned());
            }
            "internal" => {
                assert!(id.starts_with("hole-") && p["class"] == "hole");
                assert_eq!(
                    p["parentId"].as_str(),
                    last_external.as_deref(),
                    "holes follow their parent"
                );
            }
            other => panic!("type {other}"),
        }
        assert!(p["points"]
            .as_array()
            .unwrap()
            .iter()
            .all(|q| q["x"].is_i64() && q["y"].is_i64()));
    }
    let (w, h) = (
        v["image_width"].as_u64().unwrap() as u32,
        v["image_height"].as_u64().unwrap() as u32,
    );
    assert_eq!(image::image_dimensions(&mask).unwrap(), (w, h));
    assert_eq!(image::image_dimensions(&overlay).unwrap(), (w, h));
    assert_eq!(image::image_dimensions(example()).unwrap(), (w, h));
}

#[test]
fn bad_inputs_fail_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.png");
    std::fs::write(&text, "this is not an image").unwrap();
    let out = bin().arg("segment").arg(&text).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not supported"), "{err}");

    let out = bin()
        .arg("segment")
        .arg(example())
        .args(["--threshold", "1.5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("threshold"));

    let out = bin()
        .arg("segment")
        .arg(example())
        .args(["--max-pixels", "1000"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pixels"));

    let out = bin()
        .arg("segment")
        .arg(example())
        .args(["--model", "no/such/model.safetensors"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such/model.safetensors"));
}

/// Runs `command` (a node that may start for real), killing it after `secs`: whether it
/// exited successfully (`None` when it was still running and had to be killed) and its
/// stderr.
fn exits_within(mut command: Command, secs: u64) -> (Option<bool>, String) {
    use std::io::Read;
    let mut child = command
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--quic-listen",
            "127.0.0.1:0",
        ])
        .args(["--gossip-listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.map(|s| s.success()), err)
}

/// Node settings that cannot work stop the node at start, naming the setting, instead of
/// being quietly raised to a value that can.
#[test]
fn node_settings_of_zero_are_refused_by_name() {
    for (flag, env) in [
        ("--max-concurrent-tasks", "MAX_CONCURRENT_TASKS"),
        ("--request-timeout-secs", "REQUEST_TIMEOUT_SECS"),
        ("--inference-threads", "INFERENCE_THREADS"),
    ] {
        let mut by_flag = bin();
        by_flag.args(["node", "--model", "synthetic:1", flag, "0"]);
        let (exited, err) = exits_within(by_flag, 20);
        assert_eq!(exited, Some(false), "{flag} 0 was accepted: {err}");
        assert!(err.contains(flag) && err.contains("0"), "{flag}: {err}");
        let mut by_env = bin();
        by_env
            .args(["node", "--model", "synthetic:1"])
            .env(env, "0");
        let (exited, err) = exits_within(by_env, 20);
        assert_eq!(exited, Some(false), "{env}=0 was accepted: {err}");
    }
}

#[test]
fn eval_prints_the_table() {
    let out = bin().args(["eval", "--count", "3"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("| ResUNet") && table.contains("| Otsu baseline"),
        "{table}"
    );
}

#[test]
fn synth_writes_an_image_and_its_mask() {
    let dir = tempfile::tempdir().unwrap();
    let (img, mask) = (dir.path().join("s.png"), dir.path().join("s_mask.png"));
    let out = bin()
        .args(["synth", "--seed", "42", "--out"])
        .arg(&img)
        .arg("--mask")
        .arg(&mask)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        image::image_dimensions(&img).unwrap(),
        image::image_dimensions(&mask).unwrap()
    );
}

/// The README's run command: `spheromesh up` starts 3 nodes with the shipped model, pushes
/// the example through node-1 (printing the demo line), serves, and drains on SIGTERM.
#[test]
fn up_starts_a_mesh_with_the_shipped_model_and_drains_on_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let state = tempfile::tempdir().expect("tempdir");
    let base = free_base_port();
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            // SIGTERM, not SIGKILL: `up` then drains its nodes (they also die with it).
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = self.0.wait();
        }
    }
    let child = bin()
        // CI exports RABBITMQ_URL for the broker tests; these nodes must not consume.
        .env_remove("RABBITMQ_URL")
        .env_remove("RABBITMQ_HOST")
        .args(["up", "--base-port", &base.to_string(), "--state-dir"])
        .arg(state.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn up");
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let demo = loop {
        match rx.recv_timeout(std::time::Duration::from_secs(120)) {
            Ok(line) if line.starts_with("demo:") => break line,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no demo line; output so far: {seen:#?}"),
        }
    };
    assert!(seen.iter().any(|l| l.contains("3 nodes up")), "{seen:#?}");
    assert!(demo.contains("processed by \"node-"), "{demo}");
    let polygons: usize = demo
        .split("-> ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("polygon count in the demo line");
    assert!(polygons > 0, "the shipped model found nothing: {demo}");
    let cluster = std::process::Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{}/cluster", base + 1)])
        .output();
    if let Ok(out) = cluster {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("node-1") && text.contains("node-3"), "{text}");
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.0.id()).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = child.0.wait().expect("wait");
    assert!(status.success(), "up exited with {status}");
}

/// A base port for `up`: base..base+2 free for TCP and UDP, base+100..base+102 for UDP.
fn free_base_port() -> u16 {
    use std::net::{TcpListener, UdpSocket};
    let free = |port: u16| {
        TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok()
    };
    let start = 21_000 + (std::process::id() % 2_000) as u16;
    (start..start + 3_000)
        .step_by(7)
        .find(|&base| (base..base + 3).all(free) && (base + 100..base + 103).all(free))
        .expect("a free port range")
}
