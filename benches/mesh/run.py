#!/usr/bin/env python3
"""Mesh benchmarks with real `spheromesh node` processes on loopback; prints Markdown tables for
docs/BENCHMARKS.md.

(b) placement against a central balancer, node configurations from the placement issue, synthetic
    engine (the labelled test double that only takes time), Poisson arrivals, in one run:
      homogeneous      3 x (100 ms, 2 slots), 90% load, all into node-1
      mildly mixed     40 / 100 / 250 ms x 2 slots, 85% load, all into the 250 ms node
      strongly mixed   1 x (20 ms, 1 slot: a GPU with one compute permit) + 4 x (400 ms, 2 slots),
                       80% load, all into a slow node, and spread round-robin over all five
                       (also with gossip every 1 s instead of 200 ms, for the herding guard)
    Each against HAProxy 2.6 `leastconn` in front of the same nodes unmeshed, plain and with
    `maxconn` = slots per server (HAProxy then queues centrally with exact knowledge of free
    slots: the strongest central baseline). Beside each result: the floor, the service time of the
    slowest node that must take work for the fast ones' capacity to cover 99% of the offered
    rate (no policy's p99 can be below it).
(c) kill -9 -> out of routing: time until no survivor's /cluster lists the killed node as
    routable (polled every 20 ms), 3-node mesh, repeated.
(d) convergence: start 10 nodes (node-1 seeds all), time from the last node's `ready` line
    until every node routes to the 9 others, repeated.
(e) membership at 50 nodes: benches/mesh/membership.py.

Usage: python3 benches/mesh/run.py [--only b,c,d] [--repeats N] [--tasks N] [--cases homog,mild,...]
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

    def start(self, name, service_ms=100, slots=2, seeds=(), extra=(), gossip_port=None):
        subprocess.run([BIN, "certs", "issue", "--dir", self.dir, name], check=True, capture_output=True)
        http = free_port()
        gossip = gossip_port or free_port()
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
    return mixed_mesh([(service_ms, slots)] * n)


def mixed_mesh(configs, extra=()):
    """Nodes node-1..n with (service_ms, slots) each, node-1 seeding the rest."""
    c = Cluster()
    first = c.start("node-1", *configs[0], extra=extra)
    for i, (ms, slots) in enumerate(configs[1:], start=2):
        c.start(f"node-{i}", ms, slots, seeds=[first["gossip"]], extra=extra)
    n = len(configs)
    ok = wait(lambda: all(len(c.routable(name)) == n - 1 for name in c.nodes), 30)
    if ok is None:
        c.stop()
        raise RuntimeError("mesh did not converge")
    return c


def loadtest(targets, rate, tasks, seed, spread="first"):
    out = subprocess.run(
        [BIN, "loadtest", "--targets", ",".join(targets), "--spread", spread, "--rate", str(rate),
         "--arrivals", "poisson", "--seed", str(seed), "--tasks", str(tasks), "--warmup", "30",
         "--concurrency", "256", "--image-size", "64x64", "--generate", "1", "--json"],
        check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def haproxy(backends):
    """HAProxy leastconn over `backends`, a list of (addr, maxconn or None)."""
    port = free_port(udp_too=False)
    servers = "\n".join(
        f"    server s{i} {addr}" + (f" maxconn {maxconn}" if maxconn else "")
        for i, (addr, maxconn) in enumerate(backends))
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


# (key, title, [(service_ms, slots)], load, entry): entry "slow" = all into the slowest node,
# "spread" = round-robin over all nodes.
CASES = [
    ("homog", "homogeneous: 3 x (100 ms, 2 slots), 90% load, all into node-1",
     [(100, 2)] * 3, 0.90, "first"),
    ("mild", "mildly mixed: 40 / 100 / 250 ms x 2 slots, 85% load, all into the 250 ms node",
     [(250, 2), (100, 2), (40, 2)], 0.85, "first"),
    ("strong", "strongly mixed: 1 x (20 ms, 1 slot) + 4 x (400 ms, 2 slots), 80% load, all into a slow node",
     [(400, 2), (20, 1), (400, 2), (400, 2), (400, 2)], 0.80, "first"),
    ("strong-spread", "strongly mixed, 80% load, spread round-robin over all five nodes",
     [(400, 2), (20, 1), (400, 2), (400, 2), (400, 2)], 0.80, "spread"),
]

# The herding guard is checked with slow gossip too (dead_after must span 4 rounds).
SLOW_GOSSIP = ("--gossip-interval-ms", "1000", "--dead-after-ms", "5000")


def capacity(configs):
    return sum(slots * 1000.0 / ms for ms, slots in configs)


def floor_ms(configs, rate):
    """Service time of the slowest node needed for the faster ones to cover 99% of `rate`."""
    covered = 0.0
    for ms, slots in sorted(configs):
        covered += slots * 1000.0 / ms
        if covered >= 0.99 * rate:
            return ms
    return max(ms for ms, _ in configs)


def run_case(case, rep, tasks):
    key, _title, configs, load, entry = case
    rate = round(capacity(configs) * load, 1)
    seed = 9_300_000 + rep
    spread = "round-robin" if entry == "spread" else "first"
    results = {}
    variants = [("spheromesh", ())]
    if key == "strong-spread":
        variants.append(("spheromesh, gossip 1 s", SLOW_GOSSIP))
    for label, extra in variants:
        c = mixed_mesh(configs, extra)
        try:
            urls = [c.url(f"node-{i}") for i in range(1, len(configs) + 1)]
            results[label] = loadtest(urls if entry == "spread" else urls[:1], rate, tasks, seed, spread)
        finally:
            c.stop()
    for label, maxconn in [("HAProxy leastconn", False), ("HAProxy leastconn maxconn=slots", True)]:
        c = Cluster()
        for i, (ms, slots) in enumerate(configs, start=1):
            c.start(f"solo-{i}", ms, slots)
        backends = [(n["http"], configs[i][1] if maxconn else None) for i, n in enumerate(c.nodes.values())]
        proc, url = haproxy(backends)
        try:
            results[label] = loadtest([url], rate, tasks, seed)
        finally:
            proc.terminate()
            proc.wait()
            c.stop()
    for label, r in results.items():
        shares = ", ".join("%s: %s" % (k, v["tasks"]) for k, v in r["processed_by"].items())
        print("  %s run %d seed %d %s: %.2f/s p50 %.0f ms p99 %.0f ms failed %d errors %s shares {%s}" % (
            key, rep + 1, seed, label, r["tasks_per_min"] / 60, r["latency"]["p50_ms"],
            r["latency"]["p99_ms"], r["failed"], r.get("errors", {}), shares), file=sys.stderr, flush=True)
    return rate, results


def bench_balance(repeats, tasks, only_cases):
    med = statistics.median
    span = lambda xs: f"{min(xs):.0f}-{max(xs):.0f}"
    for case in CASES:
        key, title, configs, _load, _entry = case
        if only_cases and key not in only_cases:
            continue
        rows = []
        for rep in range(repeats):
            rate, results = run_case(case, rep, tasks)
            rows.append(results)
        floor = floor_ms(configs, rate)
        print(f"\n(b) {title}: Poisson {rate}/s (capacity {capacity(configs):.1f}/s), {tasks} tasks x "
              f"{repeats} runs (seeds 9300000+); floor {floor} ms\n")
        print("| setup | throughput/s median (min-max) | vs offered | p50 ms median (min-max) | p99 ms median (min-max) "
              "| p99 vs better HAProxy | p99 vs floor | failed (503) |")
        print("|---|---|---|---|---|---|---|---|")
        p99 = lambda label: [r[label]["latency"]["p99_ms"] for r in rows]
        best_haproxy = min(med(p99("HAProxy leastconn")), med(p99("HAProxy leastconn maxconn=slots")))
        for label in rows[0]:
            thr = [r[label]["tasks_per_min"] / 60 for r in rows]
            p50 = [r[label]["latency"]["p50_ms"] for r in rows]
            failed = sum(r[label]["failed"] for r in rows)
            busy = sum(r[label].get("errors", {}).get("busy", 0) for r in rows)
            print(f"| {label} | {med(thr):.2f} ({min(thr):.2f}-{max(thr):.2f}) | {med(thr) / rate:.3f} "
                  f"| {med(p50):.0f} ({span(p50)}) | {med(p99(label)):.0f} ({span(p99(label))}) "
                  f"| x{med(p99(label)) / best_haproxy:.2f} | x{med(p99(label)) / floor:.2f} | {failed} ({busy}) |",
                  flush=True)


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
    ap.add_argument("--cases", default="", help="comma-separated keys of CASES (default: all)")
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
        bench_balance(args.repeats, args.tasks, set(filter(None, args.cases.split(","))))
    if "c" in only:
        bench_kill(max(args.repeats, 5))
    if "d" in only:
        bench_converge(args.repeats)


if __name__ == "__main__":
    main()
