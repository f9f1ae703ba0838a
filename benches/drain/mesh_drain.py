#!/usr/bin/env python3
"""The spheromesh side of the drain benchmark: N real `spheromesh node` processes, meshed,
each with one slot and consuming the queue, drain a batch that publish.py put there first.

The nodes run the synthetic engine in `synthetic:width` mode (a labelled test double: a task
takes as many milliseconds as its image is wide), so the images bench/100.png and
bench/2000.png written here give the batch's 100 ms and 2 s tasks. A callback sink records
each callback's arrival and the node's `processing_time`; a task started at arrival minus
processing time. Prints the makespan (last finish - first start) in seconds.

    python3 mesh_drain.py --url AMQP_URL --queue Q --port CALLBACK_PORT [--nodes 3]
"""
import argparse
import http.server
import json
import os
import struct
import sys
import subprocess
import tempfile
import threading
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "spheromesh")


def png(width, height=1):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


class Sink(http.server.BaseHTTPRequestHandler):
    records = []
    lock = threading.Lock()

    def do_PUT(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        now = time.time()
        took = (body.get("result_data") or {}).get("processing_time", 0.0)
        with Sink.lock:
            by = (body.get("result_data") or {}).get("processed_by", "?")
            Sink.records.append((self.path, now - took, now, body["status"], by))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_):
        pass


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--queue", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--count", type=int, default=60)
    args = ap.parse_args()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    work = tempfile.mkdtemp(prefix="drain-bench-")
    os.makedirs(os.path.join(work, "uploads", "bench"))
    for ms in (100, 2000):
        with open(os.path.join(work, "uploads", "bench", f"{ms}.png"), "wb") as f:
            f.write(png(ms))
    certs = os.path.join(work, "certs")
    subprocess.run([BIN, "certs", "init", "--dir", certs], check=True, capture_output=True)
    key = subprocess.run([BIN, "certs", "key"], check=True, capture_output=True, text=True).stdout.strip()
    procs, seed = [], None
    try:
        for i in range(1, args.nodes + 1):
            name = f"drain-{i}"
            subprocess.run([BIN, "certs", "issue", "--dir", certs, name], check=True, capture_output=True)
            http_port, gossip_port = free_port(), free_port()
            cmd = [BIN, "node", "--instance-id", name, "--http-listen", f"127.0.0.1:{http_port}",
                   "--quic-listen", f"127.0.0.1:{http_port}", "--gossip-listen", f"127.0.0.1:{gossip_port}",
                   "--model", "synthetic:width", "--max-concurrent-tasks", "1", "--tls-dir", certs,
                   "--rabbitmq-url", args.url, "--rabbitmq-queue", args.queue,
                   "--uploads-root", os.path.join(work, "uploads")]
            if seed:
                cmd += ["--seeds", seed]
            env = dict(os.environ, SPHEROMESH_CLUSTER_KEY=key, RUST_LOG="warn")
            env.pop("HOSTNAME", None)
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
            procs.append(proc)
            for line in proc.stdout:
                if '"event":"ready"' in line:
                    seed = seed or json.loads(line)["gossip"]
                    break
        deadline = time.time() + 120
        while len(Sink.records) < args.count and time.time() < deadline:
            time.sleep(0.05)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        server.shutdown()
    recs = Sink.records
    if len(recs) < args.count or any(r[3] != "completed" for r in recs):
        raise SystemExit(f"only {len(recs)} of {args.count} callbacks (or some failed)")
    if os.environ.get("DRAIN_BENCH_TRACE"):
        t0 = min(r[1] for r in recs)
        for r in sorted(recs, key=lambda r: (r[4], r[1])):
            print(f"  {r[4]} start {r[1] - t0:6.2f} finish {r[2] - t0:6.2f} took {r[2] - r[1]:.2f}",
                  file=sys.stderr)
    print(f"{max(r[2] for r in recs) - min(r[1] for r in recs):.2f}")


if __name__ == "__main__":
    main()
