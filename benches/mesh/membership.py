#!/usr/bin/env python3
"""Membership at 50 nodes on loopback, with real `spheromesh node` processes (synthetic engine,
the labelled test double), for docs/BENCHMARKS.md. One run does, in order:

(e1) convergence: start 50 nodes, node-1 seeding the rest; time from the last node's `ready`
     line until every node routes to all 49 others (all 50 /cluster polled in parallel);
(e2) kill -9 of one node: time until it is out of every survivor's routing view, per observer
     (the arrival time of the first answer without it; the maximum over observers is the
     figure, so a poll round's length is an error bar on it);
(e3) pause: SIGSTOP one node for 3 s, SIGCONT, then read its /cluster for 3 s: the fewest live
     peers it lists (every one of the 48 live nodes should stay);
(e4) loss: drop 5% of all gossip datagrams at random (`iptables -m statistic --mode random`;
     tc netem does not exist here) for 60 s while every node's view is read once a second:
     false deaths = times a live node was missing from some view. Needs root; the rule is
     removed on every exit path.

Gossip listens on 127.0.0.1:31000-31049 so one iptables rule covers it.
Usage: python3 benches/mesh/membership.py [--nodes 50] [--loss-secs 60] [--repeats 1]
"""

import argparse
import concurrent.futures as futures
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the Cluster helper of the mesh benchmarks)

GOSSIP_BASE = 31000
POOL = futures.ThreadPoolExecutor(max_workers=16)


def routable_of(c, name):
    try:
        with urllib.request.urlopen(c.url(name, "/cluster"), timeout=5) as r:
            cluster = json.load(r)
        return {m["id"] for m in cluster["members"] if m["routable"]}
    except OSError:
        return None


def views(c, names):
    """Every node's routable set, read in parallel: {name: set or None}."""
    return dict(zip(names, POOL.map(lambda n: routable_of(c, n), names)))


def timed_views(c, names):
    """As `views`, with the time each answer arrived: {name: (monotonic time, set or None)}."""
    def read(n):
        s = routable_of(c, n)
        return time.monotonic(), s
    return dict(zip(names, POOL.map(read, names)))


def start_mesh(n):
    c = run.Cluster()
    first = c.start("node-1", 50, 1, gossip_port=GOSSIP_BASE)
    for i in range(2, n + 1):
        c.start(f"node-{i}", 50, 1, seeds=[first["gossip"]], gossip_port=GOSSIP_BASE + i - 1)
    last_ready = time.monotonic()
    names = list(c.nodes)
    took = None
    deadline = last_ready + 60
    while time.monotonic() < deadline:
        v = views(c, names)
        if all(s is not None and len(s) == n - 1 for s in v.values()):
            took = time.monotonic() - last_ready
            break
        time.sleep(0.05)
    return c, took


def kill_one(c, victim):
    observers = [n for n in c.nodes if n != victim]
    c.kill9(victim)
    t0 = time.monotonic()
    gone = {}
    while len(gone) < len(observers) and time.monotonic() - t0 < 30:
        for name, (at, s) in timed_views(c, [o for o in observers if o not in gone]).items():
            if s is not None and victim not in s:
                gone[name] = at - t0
    return gone, len(observers)


def pause_one(c, name, pause=3.0, watch=3.0):
    proc = c.nodes[name]["proc"]
    live = len(c.nodes) - 1
    proc.send_signal(signal.SIGSTOP)
    time.sleep(pause)
    proc.send_signal(signal.SIGCONT)
    fewest = live
    t0 = time.monotonic()
    while time.monotonic() - t0 < watch:
        s = routable_of(c, name)
        if s is not None:
            fewest = min(fewest, len(s))
        time.sleep(0.02)
    return fewest, live


def iptables(action, n, probability):
    rule = ["INPUT", "-i", "lo", "-p", "udp", "--dport", f"{GOSSIP_BASE}:{GOSSIP_BASE + n - 1}",
            "-m", "statistic", "--mode", "random", "--probability", str(probability), "-j", "DROP"]
    subprocess.run(["iptables", action, *rule], check=(action == "-A"), capture_output=True)


def lossy(c, n, secs, probability=0.05):
    names = list(c.nodes)
    expect = len(names) - 1
    false_deaths = 0
    worst = expect
    samples = 0
    iptables("-A", n, probability)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < secs:
            for s in views(c, names).values():
                if s is not None:
                    samples += 1
                    missing = expect - len(s)
                    false_deaths += max(0, missing)
                    worst = min(worst, len(s))
            time.sleep(1.0)
    finally:
        iptables("-D", n, probability)
    return false_deaths, worst, samples


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--loss-secs", type=float, default=60)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    if not os.path.exists(run.BIN):
        sys.exit(f"{run.BIN} missing: cargo build --release")
    print(f"host: {os.uname().nodename}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; "
          f"{time.strftime('%Y-%m-%d %H:%M')}; {args.nodes} nodes")
    rows = []
    for rep in range(args.repeats):
        c, converged = start_mesh(args.nodes)
        try:
            print(f"  run {rep + 1}: converged {converged}", file=sys.stderr, flush=True)
            gone, observers = kill_one(c, f"node-{args.nodes}")
            out_max = max(gone.values()) if len(gone) == observers else float("inf")
            print(f"  run {rep + 1}: killed node out of {len(gone)}/{observers} views, max {out_max:.2f} s, "
                  f"median {statistics.median(gone.values()):.2f} s", file=sys.stderr, flush=True)
            fewest, live = pause_one(c, "node-2")
            print(f"  run {rep + 1}: paused node listed at least {fewest} of {live} live peers",
                  file=sys.stderr, flush=True)
            time.sleep(3)  # let the paused node rejoin every view before the loss phase
            false_deaths, worst, samples = lossy(c, args.nodes - 1, args.loss_secs)
            print(f"  run {rep + 1}: 5% loss for {args.loss_secs:.0f} s: {false_deaths} false deaths in "
                  f"{samples} views, fewest {worst}", file=sys.stderr, flush=True)
            rows.append((converged, out_max, statistics.median(gone.values()), fewest, live,
                         false_deaths, samples))
        finally:
            c.stop()
    print(f"\n(e) membership, {args.nodes} nodes on loopback (gossip 200 ms, dead_after 2 s), "
          f"{args.repeats} run(s)\n")
    print("| run | converge (last ready -> all views full) | kill -9 out of every view (max / median over observers) "
          "| paused 3 s: fewest live peers listed after resume | 5% gossip loss for "
          f"{args.loss_secs:.0f} s: false deaths (views read) |")
    print("|---|---|---|---|---|")
    for i, (conv, omax, omed, fewest, live, fd, samples) in enumerate(rows, 1):
        conv_s = f"{conv:.2f} s" if conv is not None else "no"
        print(f"| {i} | {conv_s} | {omax:.2f} s / {omed:.2f} s | {fewest} of {live} | {fd} ({samples}) |")


if __name__ == "__main__":
    main()
