#!/usr/bin/env bash
# The CUDA checks of spheromesh, as one script for a lent GPU host (docs/CUDA.md).
#
# Here (no GPU needed):
#   BENCH=1 scripts/build-cuda.sh      # target/cuda/release/{spheromesh, deps/inference-*}
#   benches/gpu/check.sh pack          # -> target/gpu-bundle.tar.gz (stripped binaries)
# On the GPU host, from the repository root, with target/gpu-bundle.tar.gz carried there:
#   OUT=/some/dir benches/gpu/check.sh run
#
# `run` finds the host's CUDA 13 libraries (the binaries link libcublas.so.13, libcurand.so.10,
# libcudart.so.13 and the driver's libcuda.so.1), then, each step logged under $OUT:
#   1. `spheromesh segment` on the shipped examples with DEVICE_PREFERENCE=cuda and =cpu, and the
#      IoU between the two masks (the GPU must segment like the CPU);
#   2. `spheromesh eval` on the held-out synthetic set on the GPU (the CPU's numbers are in
#      models/README.md);
#   3. the criterion forward / end-to-end groups on the GPU (shipped and original architecture);
#   4. PyTorch's forward pass of the original architecture on the same GPU (benches/torch/forward.py);
#   5. one `spheromesh node` on the GPU under `spheromesh loadtest` (1024x1024 PNGs, 8 in flight),
#      with one compute permit per core and with one (the default on a GPU since run 2);
#   6. the original architecture's forward pass on the host's CPU cores, candle against PyTorch.
# A failing step is logged and the rest still run; the exit status is 1 if any failed.
# STEPS="segment bench ..." runs only the named steps (names as logged: segment eval bench torch
# serve_per_core serve_1permit cpu_candle cpu_torch).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BUNDLE=target/gpu-bundle.tar.gz

pack() {
    local dir=target/gpu-bundle bench
    rm -rf "$dir" && mkdir -p "$dir"
    bench=$(ls -t target/cuda/release/deps/inference-* | grep -v '\.d$' | head -1)
    cp target/cuda/release/spheromesh "$dir/spheromesh"
    cp "$bench" "$dir/inference-bench"
    strip "$dir"/*
    tar -czf "$BUNDLE" -C "$dir" .
    ls -l "$BUNDLE"
}

# Prints the directory holding $1, looking where CUDA images keep their libraries.
find_lib() {
    local hit
    hit=$(ldconfig -p 2>/dev/null | awk -v l="$1" '$1 == l {print $NF; exit}')
    if [ -z "$hit" ]; then
        hit=$(ls /usr/local/cuda/lib64/"$1" /usr/local/cuda-13*/lib64/"$1" \
            /usr/local/cuda/targets/x86_64-linux/lib/"$1" \
            /opt/torch/.venv/lib/python3*/site-packages/nvidia/cu13/lib/"$1" 2>/dev/null | head -1)
    fi
    if [ -z "$hit" ]; then
        hit=$(find / -xdev -name "$1" -print -quit 2>/dev/null)
    fi
    [ -n "$hit" ] && dirname "$hit"
}

failed=0
step() { # step NAME COMMAND...: runs COMMAND, logs to $OUT/NAME.log, records failure
    local name=$1; shift
    case " ${STEPS:-$name} " in *" $name "*) ;; *) return 0 ;; esac
    echo "=== $name: $*"
    local t0=$SECONDS
    if "$@" >"$OUT/$name.log" 2>&1; then
        echo "--- $name ok ($((SECONDS - t0)) s)"
    else
        echo "--- $name FAILED rc=$? ($((SECONDS - t0)) s)"; failed=1
    fi
    tail -n 25 "$OUT/$name.log"
}

segment_both() {
    local img name
    for img in examples/brightfield.png examples/fluorescence.png; do
        name=$(basename "$img" .png)
        for dev in cuda cpu; do
            DEVICE_PREFERENCE=$dev "$BIN/spheromesh" segment "$img" \
                --out "$OUT/$name.$dev.json" --mask "$OUT/$name.$dev.mask.png" || return 1
        done
        python3 - "$OUT/$name.cuda.mask.png" "$OUT/$name.cpu.mask.png" <<'EOF' || return 1
import sys
import numpy as np
from PIL import Image
a, b = (np.asarray(Image.open(p)) > 127 for p in sys.argv[1:3])
union = np.logical_or(a, b).sum()
iou = np.logical_and(a, b).sum() / union if union else 1.0
print(f"{sys.argv[1]}: cuda-vs-cpu mask IoU {iou:.6f}, differing pixels {int((a != b).sum())}")
sys.exit(0 if iou >= 0.999 else 1)
EOF
    done
}

serve_and_load() { # [INFERENCE_THREADS]; COLD_JIT=1 empties the driver's kernel cache first
    [ "${COLD_JIT:-0}" = 1 ] && rm -rf "$HOME/.nv/ComputeCache"
    local t0=$SECONDS
    DEVICE_PREFERENCE=cuda "$BIN/spheromesh" node --http-listen 127.0.0.1:5002 \
        --quic-listen 127.0.0.1:5003 --gossip-listen 127.0.0.1:7946 \
        --max-concurrent-tasks 8 --queue-limit 32 ${1:+--inference-threads $1} >"$OUT/node.log" 2>&1 &
    local node=$! ok=0
    for _ in $(seq 1 180); do
        curl -fs http://127.0.0.1:5002/health/ready >/dev/null 2>&1 && { ok=1; break; }
        sleep 0.5
    done
    echo "ready after $((SECONDS - t0)) s"
    if [ $ok = 1 ]; then
        curl -s -o /dev/null -w "first request after ready: %{time_total} s (HTTP %{http_code})\n" \
            -H 'Content-Type: image/png' --data-binary @examples/brightfield.png \
            http://127.0.0.1:5002/segment
        "$BIN/spheromesh" loadtest --targets http://127.0.0.1:5002 --image-size 1024x1024 \
            --generate 8 --tasks "${SERVE_TASKS:-400}" --warmup 16 --concurrency 8 || ok=0
        curl -fs http://127.0.0.1:5002/metrics | grep -E '^ml_(tasks|inference)' | head -20
    fi
    kill -TERM $node; wait $node
    grep -m3 -i "warmed up\|device\|cuda" "$OUT/node.log"
    [ $ok = 1 ]
}

run() {
    OUT=${OUT:-/tmp/spheromesh-gpu-check}
    mkdir -p "$OUT"
    BIN=$(mktemp -d)
    tar -xzf "$BUNDLE" -C "$BIN" || { echo "no $BUNDLE: run 'pack' where it was built"; exit 1; }
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    local libs="" lib dir
    for lib in libcublas.so.13 libcurand.so.10 libcudart.so.13; do
        dir=$(find_lib "$lib") || { echo "missing $lib"; exit 1; }
        case ":$libs:" in *":$dir:"*) ;; *) libs=${libs:+$libs:}$dir ;; esac
    done
    export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    ldd "$BIN/spheromesh" | grep -E 'cuda|cublas|curand|not found'
    export RUST_LOG=${RUST_LOG:-info}
    step segment segment_both
    step eval env DEVICE_PREFERENCE=cuda "$BIN/spheromesh" eval --count "${EVAL_COUNT:-100}"
    step bench env DEVICE_PREFERENCE=cuda SPHEROMESH_BENCH_MODEL=models/spheroid-resunet-small.safetensors \
        "$BIN/inference-bench" --bench 'forward_|segment_end_to_end'
    step torch python3 benches/torch/forward.py --device cuda --sizes 256,512,1024 --runs 10 --warmup 3
    local cores
    cores=$(nproc)
    step serve_per_core serve_and_load "$cores"
    step serve_1permit serve_and_load 1
    step cpu_candle env DEVICE_PREFERENCE=cpu SPHEROMESH_BENCH_ORIGINAL_SIZES=256,512 \
        SPHEROMESH_BENCH_SHIPPED_SIZES=none "$BIN/inference-bench" --bench forward_original
    step cpu_torch python3 benches/torch/forward.py --device cpu --threads "$cores" --sizes 256,512 \
        --runs 5 --warmup 1
    exit $failed
}

case ${1:-} in
pack) pack ;;
run) run ;;
*) echo "usage: $0 pack|run" >&2; exit 2 ;;
esac
