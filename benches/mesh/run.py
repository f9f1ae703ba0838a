#!/usr/bin/env python3
"""Mesh benchmarks (b), (c) and (d) of the mesh issue, with real `spheromesh node` processes
on loopback; prints Markdown tables for docs/BENCHMARKS.md.

(b) balancing: 3 nodes x 2 slots, synthetic 100 ms tasks (the engine's labelled test double),
    Poisson arrivals at ~90% of capacity. spheromesh: every request into node-1, the mesh
    places it. HAProxy 2.6 `leastconn` in front of 3 *unmeshed* nodes, in the same run,
    twice: plain, and with `maxconn 2` per server (HAProxy queues centrally and dispatches
    when a slot frees - the strongest central baseline). Ideal: throughput = offered rate,
    latency = the 100 ms service time.
(c) kill -9 -> out of routing: time until no survivor's /cluster lists the killed node as
    routable (polled every 20 ms), 3-node mesh, repeated.
(d) convergence: start 10 nodes (node-1 seeds all), time from the last node's `ready` line
    until every node routes to the 9 others, repeated.

Usage: python3 benches/mesh/run.py [--only b,c,d] [--repeats N] [--tasks N]
Needs target/release/spheromesh (cargo build --release) and haproxy (apt-get install haproxy;
this script installs it when missing).
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "spheromesh")


def free_port(udp_too=True):
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if not udp_too:
            return port
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            u.close()


class Cluster:
    """Nodes sharing one CA and key in a temporary folder."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="spheromesh-bench-")
        subprocess.run([BIN, "certs", "init", "--dir", self.dir], check=True, capture_output=True)
        self.key = subprocess.run([BIN, "certs", "key"], check=True, capture_output=True, text=True).stdout.strip()
        self.nodes = {}

    def start(self, name, service_ms=100, slots=2, seeds=(), extra=()):
        subprocess.run([BIN, "certs", "issue", "--dir", self.dir, name], check=True, capture_output=True)
        http = free_port()
        gossip = free_port()
        args = [BIN, "node", "--instance-id", name,
                "--http-listen", f"127.0.0.1:{http}", "--quic-listen", f"127.0.0.1:{http}",
                "--gossip-listen", f"127.0.0.1:{gossip}", "--model", f"synthetic:{service_ms}",
                "--max-concurrent-tasks", str(slots), "--tls-dir", self.dir, *extra]
        if seeds:
            args += ["--seeds", ",".join(seeds)]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("RABBITMQ_") and k not in ("HOSTNAME", "UPLOADS_ROOT")}
        env.update(SPHEROMESH_CLUSTER_KEY=self.key, RUST_LOG="warn")
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
        for line in proc.stdout:
            if '"event":"ready"' in line:
                ready = json.loads(line)
                break
        else:
            raise RuntimeError(f"{name} exited before ready")
        node = {"proc": proc, "http": ready["http"], "gossip": ready["gossip"], "ready_at": time.monotonic()}
        self.nodes[name] = node
        return node

    def url(self, name, path=""):
        return f"http://{self.nodes[name]['http']}{path}"

    def routable(self, name):
        with urllib.request.urlopen(self.url(name, "/cluster"), timeout=5) as r:
            cluster = json.load(r)
        return {m["id"] for m in cluster["members"] if m["routable"]}

    def kill9(self, name):
        node = self.nodes.pop(name)
        node["proc"].kill()
        node["proc"].wait()

    def stop(self):
        for node in self.nodes.values():
            node["proc"].send_signal(signal.SIGKILL)
        for node in self.nodes.values():
            node["proc"].wait()
        self.nodes.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


def wait(cond, timeout, step=0.02):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if cond():
            return time.monotonic() - start
        time.sleep(step)
    return None


def mesh(n, service_ms=100, slots=2):
    c = Cluster()
    first = c.start("node-1", service_ms, slots)
    for i in range(2, n + 1):
        c.start(f"node-{i}", service_ms, slots, seeds=[first["gossip"]])
    ok = wait(lambda: all(len(c.routable(name)) == n - 1 for name in c.nodes), 30)
    if ok is None:
        raise RuntimeError("mesh did not converge")
    return c


def loadtest(targets, rate, tasks, seed):
    out = subprocess.run(
        [BIN, "loadtest", "--targets", ",".join(targets), "--spread", "first", "--rate", str(rate),
         "--arrivals", "poisson", "--seed", str(seed), "--tasks", str(tasks), "--warmup", "30",
         "--concurrency", "256", "--image-size", "64x64", "--generate", "1", "--json"],
        check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def haproxy(backends, maxconn):
    port = free_port(udp_too=False)
    servers = "\n".join(
        f"    server s{i} {addr}" + (f" maxconn {maxconn}" if maxconn else "")
        for i, addr in enumerate(backends))
    cfg = f"""global
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout queue 120s
frontend fe
    bind 127.0.0.1:{port}
    default_backend ml
backend ml
    balance leastconn
{servers}
"""
    path = tempfile.mktemp(suffix=".cfg")
    with open(path, "w") as f:
        f.write(cfg)
    proc = subprocess.Popen(["haproxy", "-f", path, "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 10)
    return proc, f"http://127.0.0.1:{port}"


def bench_balance(repeats, tasks):
    rate = 54  # 90% of 3 nodes x 2 slots / 100 ms = 60 tasks/s
    rows = []
    for rep in range(repeats):
        seed = 9_200_000 + rep
        c = mesh(3)
        try:
            sm = loadtest([c.url("node-1")], rate, tasks, seed)
        finally:
            c.stop()
        results = {"spheromesh (all into node-1)": sm}
        for label, maxconn in [("HAProxy leastconn", None), ("HAProxy leastconn maxconn 2", 2)]:
            c = Cluster()
            for i in range(1, 4):
                c.start(f"solo-{i}")
            proc, url = haproxy([n["http"] for n in c.nodes.values()], maxconn)
            try:
                results[label] = loadtest([url], rate, tasks, seed)
            finally:
                proc.terminate()
                proc.wait()
                c.stop()
        rows.append(results)
        for label, r in results.items():
            shares = ", ".join("%s: %s" % (k, v["tasks"]) for k, v in r["processed_by"].items())
            print("  run %d seed %d %s: %.2f/s p50 %.0f ms p99 %.0f ms failed %d shares {%s}" % (
                rep + 1, seed, label, r["tasks_per_min"] / 60, r["latency"]["p50_ms"],
                r["latency"]["p99_ms"], r["failed"], shares), file=sys.stderr)
    print(f"\n(b) balancing: 3 nodes x 2 slots, synthetic 100 ms, Poisson {rate}/s (90% load), "
          f"{tasks} tasks x {repeats} runs (seeds 9200000+)\n")
    print("| setup | throughput/s median (min-max) | vs ideal | p50 ms median (min-max) | p99 ms median (min-max) | p99 vs HAProxy | failed |")
    print("|---|---|---|---|---|---|---|")
    labels = list(rows[0].keys())
    med = lambda xs: statistics.median(xs)
    span = lambda xs: f"{min(xs):.0f}-{max(xs):.0f}"
    base_p99 = med([r["HAProxy leastconn"]["latency"]["p99_ms"] for r in rows])
    base_thr = med([r["HAProxy leastconn"]["tasks_per_min"] / 60 for r in rows])
    for label in labels:
        thr = [r[label]["tasks_per_min"] / 60 for r in rows]
        p50 = [r[label]["latency"]["p50_ms"] for r in rows]
        p99 = [r[label]["latency"]["p99_ms"] for r in rows]
        failed = sum(r[label]["failed"] for r in rows)
        print(f"| {label} | {med(thr):.2f} ({min(thr):.2f}-{max(thr):.2f}) | {med(thr) / rate:.3f} "
              f"(HAProxy x{med(thr) / base_thr:.3f}) | {med(p50):.0f} ({span(p50)}) | {med(p99):.0f} ({span(p99)}) "
              f"| x{med(p99) / base_p99:.2f} | {failed} |")


def bench_kill(repeats):
    times = []
    for _ in range(repeats):
        c = mesh(3)
        time.sleep(1.0)
        c.kill9("node-3")
        t0 = time.monotonic()
        took = wait(lambda: all("node-3" not in c.routable(n) for n in c.nodes), 15)
        times.append(took if took is not None else float("inf"))
        c.stop()
    print(f"\n(c) kill -9 to out of every survivor's routing (3 nodes, gossip 200 ms, dead_after 2 s), {repeats} runs\n")
    print("| median | min | max | runs |")
    print("|---|---|---|---|")
    print(f"| {statistics.median(times):.2f} s | {min(times):.2f} s | {max(times):.2f} s | {', '.join(f'{t:.2f}' for t in times)} |")


def bench_converge(repeats, n=10):
    times = []
    for _ in range(repeats):
        c = Cluster()
        first = c.start("node-1")
        for i in range(2, n + 1):
            c.start(f"node-{i}", seeds=[first["gossip"]])
        last_ready = max(node["ready_at"] for node in c.nodes.values())
        done = wait(lambda: all(len(c.routable(name)) == n - 1 for name in c.nodes), 30)
        times.append(time.monotonic() - last_ready if done is not None else float("inf"))
        c.stop()
    print(f"\n(d) convergence of {n} nodes: last node ready -> every node routes to all {n - 1} others, {repeats} runs\n")
    print("| median | min | max | runs |")
    print("|---|---|---|---|")
    print(f"| {statistics.median(times):.2f} s | {min(times):.2f} s | {max(times):.2f} s | {', '.join(f'{t:.2f}' for t in times)} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="b,c,d")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=1000)
    args = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} missing: cargo build --release")
    only = set(args.only.split(","))
    if "b" in only and shutil.which("haproxy") is None:
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy",
                       shell=True, check=True)
    print(f"host: {os.uname().nodename}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    if "b" in only:
        bench_balance(args.repeats, args.tasks)
    if "c" in only:
        bench_kill(max(args.repeats, 5))
    if "d" in only:
        bench_converge(args.repeats)


if __name__ == "__main__":
    main()
