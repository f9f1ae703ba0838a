#!/usr/bin/env bash
# Tasks per minute of one node serving the original 132 M-parameter network at 1024, for each
# split of the cores between concurrent inferences, with the node's peak RSS beside each.
#
#   benches/throughput.sh                       # permits 1 and 2, 10 measured tasks each
#   PERMITS="1 2 3" TASKS=20 benches/throughput.sh
#
# For each P in $PERMITS a fresh `spheromesh node` runs with --inference-threads P (P model
# runs at once, all sharing the one rayon pool of every core) and --max-concurrent-tasks 2P, so
# decode and postprocessing of one task overlap another's forward pass. `spheromesh loadtest`
# then offers 1000x1000 PNGs (4 distinct generated micrographs) from 2P closed-loop workers:
# P warm-up tasks, then $TASKS measured ones. TTA is off (as the node does for models over
# 10 M parameters). The checkpoint is a torch.save of the original architecture with random
# weights (benches/torch/save_checkpoint.py, cached under target/bench-report/); the speed and
# memory of a forward pass do not depend on the weights' values.
#
# Prints one Markdown row per P: tasks/min, p50/p95 latency, the node's idle RSS after loading
# and its peak RSS (VmHWM) over the run. Logs and the loadtest JSON go to $OUT.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PERMITS="${PERMITS:-1 2}"
TASKS="${TASKS:-10}"
OUT="${OUT:-target/bench-report/throughput-$(date +%Y%m%d-%H%M%S)}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET_DIR/release/spheromesh"
PTH="$TARGET_DIR/bench-report/original.pth"
mkdir -p "$OUT" "$(dirname "$PTH")"

cargo build --release --bin spheromesh >"$OUT/build.log" 2>&1
tools/parity/setup_venv.sh >"$OUT/setup_venv.log" 2>&1
[ -f "$PTH" ] || .venv-torch/bin/python benches/torch/save_checkpoint.py "$PTH"

kib() { awk -v k="$1" '/^'"$1"':/ { print $2 }' "/proc/$2/status"; }
gib() { awk -v k="$1" 'BEGIN { printf "%.2f", k / 1048576 }'; }

echo "| compute permits | slots | tasks/min | p50 s | p95 s | idle RSS GiB | peak RSS GiB |"
echo "|---|---|---|---|---|---|---|"
for p in $PERMITS; do
    port=$((5100 + p))
    "$BIN" node --http-listen "127.0.0.1:$port" --quic-listen "127.0.0.1:$((port + 100))" \
        --gossip-listen "127.0.0.1:$((port + 200))" --model "$PTH" --tta off \
        --inference-threads "$p" --max-concurrent-tasks $((2 * p)) >"$OUT/node-$p.log" 2>&1 &
    node=$!
    trap 'kill $node 2>/dev/null || true' EXIT
    for _ in $(seq 1 600); do
        curl -fs "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1 && break
        kill -0 $node 2>/dev/null || { echo "node exited (see $OUT/node-$p.log)" >&2; exit 1; }
        sleep 0.5
    done
    idle=$(kib VmRSS $node)
    "$BIN" loadtest --targets "http://127.0.0.1:$port" --generate 4 --image-size 1000x1000 \
        --concurrency $((2 * p)) --tasks "$TASKS" --warmup "$p" --timeout 900 --retry-busy --json \
        >"$OUT/load-$p.json" 2>"$OUT/load-$p.log"
    peak=$(kib VmHWM $node)
    kill -TERM $node
    wait $node || true
    python3 - "$OUT/load-$p.json" "$p" "$(gib "$idle")" "$(gib "$peak")" <<'PY'
import json, sys
path, p, idle, peak = sys.argv[1:]
r = json.load(open(path))
lat = r["latency"]
assert r["failed"] == 0 and r["completed"] == r["tasks"], f"{r['failed']} failed: {r['errors']}"
print(f"| {p} | {2 * int(p)} | {r['tasks_per_min']:.2f} | {lat['p50_ms'] / 1e3:.1f} "
      f"| {lat['p95_ms'] / 1e3:.1f} | {idle} | {peak} |")
PY
done
