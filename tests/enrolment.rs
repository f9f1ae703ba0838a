//! Enrolment end to end with the real binary: `spheromesh ca serve` on a socket, nodes that
//! enrol with `ENROLL_URL` + a join token, and what happens with a wrong or revoked token.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0";
const OTHER: &str = "f00df00df00df00df00df00df00df00df00df00d";

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_spheromesh"));
    c.env_clear().env("RUST_LOG", "info").env("NO_COLOR", "1");
    c
}

/// Reads stdout lines until the `{"event":"ready"}` line; returns it.
fn ready_line(child: &mut Child, within: Duration) -> serde_json::Value {
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) {
                if value["event"] == "ready" {
                    let _ = tx.send(value);
                }
            }
        }
    });
    rx.recv_timeout(within).expect("ready line")
}

fn start_ca(dir: &std::path::Path, tokens: &[(&str, &str)]) -> (Proc, String) {
    let mut cmd = bin();
    cmd.args(["ca", "serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(dir)
        .envs(tokens.iter().copied())
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().expect("start ca");
    let ready = ready_line(&mut child, Duration::from_secs(20));
    let url = format!("http://{}", ready["ca"].as_str().expect("ca address"));
    (Proc(child), url)
}

/// A free UDP port for gossip (a node refuses to advertise port 0 to its peers).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .expect("bind udp")
        .local_addr()
        .expect("addr")
        .port()
}

fn node(name: &str, url: &str, token: &str) -> Command {
    let gossip = format!("127.0.0.1:{}", free_udp_port());
    let mut cmd = bin();
    cmd.args([
        "node",
        "--model",
        "synthetic:10",
        "--http-listen",
        "127.0.0.1:0",
        "--quic-listen",
        "127.0.0.1:0",
        "--gossip-listen",
        &gossip,
        "--enroll-timeout-secs",
        "10",
    ])
    .env("HOSTNAME", name)
    .env("ENROLL_URL", url)
    .env("JOIN_TOKEN", token)
    .env("SPHEROMESH_CLUSTER_KEY", "0123456789abcdef0123456789abcdef");
    cmd
}

/// Runs a node that must fail to start; returns its stderr.
fn refused(mut cmd: Command) -> String {
    let out = cmd.output().expect("run node");
    assert!(!out.status.success(), "node started although refused");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_node_with_the_token_enrols_and_serves_one_without_it_never_starts() {
    let dir = tempfile::tempdir().expect("dir");
    let (_ca, url) = start_ca(dir.path(), &[("JOIN_TOKEN", TOKEN)]);
    assert!(dir.path().join("ca.key").exists(), "the CA made its key");

    let mut good = node("replica-a", &url, TOKEN);
    good.stdout(Stdio::piped());
    let mut child = Proc(good.spawn().expect("node"));
    let ready = ready_line(&mut child.0, Duration::from_secs(30));
    assert_eq!(ready["instance_id"], "replica-a");
    let log = std::fs::read_to_string(dir.path().join("issued.log")).expect("issued.log");
    assert!(log.contains("\"name\":\"replica-a\""), "{log}");

    let stderr = refused(node("replica-b", &url, OTHER));
    assert!(
        stderr.contains("401") && stderr.contains("unknown_token"),
        "{stderr}"
    );
    assert!(!std::fs::read_to_string(dir.path().join("issued.log"))
        .expect("issued.log")
        .contains("replica-b"));
}

#[test]
fn deleting_a_line_of_the_token_file_revokes_it_and_scopes_hold() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("tokens");
    std::fs::write(&file, format!("{TOKEN} names=ml-*\n{OTHER}\n")).expect("tokens");
    let ca_dir = dir.path().join("ca");
    let (_ca, url) = start_ca(
        &ca_dir,
        &[("JOIN_TOKEN_FILE", file.to_str().expect("path"))],
    );

    let stderr = refused(node("db-1", &url, TOKEN));
    assert!(
        stderr.contains("403") && stderr.contains("name_out_of_scope"),
        "{stderr}"
    );

    let mut ok = node("ml-1", &url, TOKEN);
    ok.stdout(Stdio::piped());
    let mut child = Proc(ok.spawn().expect("node"));
    ready_line(&mut child.0, Duration::from_secs(30));

    std::fs::write(&file, format!("{OTHER}\n")).expect("revoke");
    let stderr = refused(node("ml-2", &url, TOKEN));
    assert!(stderr.contains("401"), "{stderr}");
}

#[test]
fn a_node_waits_for_a_ca_that_is_not_up_yet() {
    let dir = tempfile::tempdir().expect("dir");
    // Find a free port, start the node against it, start the CA there a little later.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut early = node("late-ca", &url, TOKEN);
    early.stdout(Stdio::piped());
    let started = Instant::now();
    let mut child = Proc(early.spawn().expect("node"));
    std::thread::sleep(Duration::from_secs(2));
    let mut ca = bin();
    ca.args([
        "ca",
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--dir",
    ])
    .arg(dir.path())
    .env("JOIN_TOKEN", TOKEN)
    .stdout(Stdio::null());
    let _ca = Proc(ca.spawn().expect("ca"));
    let ready = ready_line(&mut child.0, Duration::from_secs(30));
    assert_eq!(ready["instance_id"], "late-ca");
    assert!(started.elapsed() >= Duration::from_secs(2));
}
