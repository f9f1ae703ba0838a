#!/usr/bin/env bash
# Run every spheromesh benchmark in one go and print the markdown for docs/BENCHMARKS.md.
#
#   benches/run.sh                 # full run: tens of minutes on 2 cores (original at 1024)
#   QUICK=1 benches/run.sh         # smoke: 256 only, criterion --quick, 1 PyTorch run
#
# Steps, each logged under $OUT (default target/bench-report/<date>-<time>/):
#   (a) cargo bench --bench inference          -> target/criterion/**, criterion.log
#   (b) PyTorch forward of the original model   -> torch.jsonl (tools/parity/setup_venv.sh first)
#   (b2) ONNX Runtime forward, same network and weights -> onnx.jsonl (pip install onnx onnxruntime
#        into the same venv; the exported graph is cached under target/onnx)
#   (c) peak RSS of `spheromesh segment` on a 1024x1024 PNG, with /usr/bin/time -v -> rss.txt
#   (c2) peak RSS of one original-network inference at 1024: `spheromesh segment` with a
#        torch.save checkpoint of that network -> rss-original.txt, and PyTorch's forward.py
#        on the same network and size -> rss-torch.txt (not in QUICK runs)
#   (d) benches/report.py                       -> report.md (also printed)
# A failing step is reported and the others still run; the exit status is 1 if any failed.
#
# Knobs (environment):
#   QUICK=1                            defaults below switch to the smoke values in brackets
#   SPHEROMESH_BENCH_SHIPPED_SIZES     shipped-model forward sides   (256,512,1024 [256])
#   SPHEROMESH_BENCH_ORIGINAL_SIZES    original-model sides, candle and PyTorch (256,512,1024 [256]);
#                                      `none` skips both
#   SPHEROMESH_BENCH_MODEL             shipped weights (models/spheroid-resunet-small.safetensors)
#   CRITERION_ARGS                     extra criterion arguments ("" [--quick]); a filter regex
#                                      such as `forward_original` may be appended
#   TORCH_RUNS / TORCH_WARMUP          timed / untimed PyTorch passes per size (5 / 1 [1 / 1])
#   TORCH_THREADS                      PyTorch and ONNX Runtime threads (2, the cores of the
#                                      reference machine)
#   SKIP_CRITERION=1 SKIP_TORCH=1 SKIP_ONNX=1 SKIP_RSS=1 SKIP_RSS_ORIGINAL=1   leave a step out
#   OUT                                where logs and report.md go
#
# RAYON_NUM_THREADS is unset so candle uses every physical core, as it does in production.
# Run on a quiet machine: the script warns when the 1-minute load average is above 0.5.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

QUICK="${QUICK:-0}"
if [ "$QUICK" = 1 ]; then
    d_sizes=256 d_crit="--quick" d_runs=1
else
    d_sizes=256,512,1024 d_crit="" d_runs=5
fi
export SPHEROMESH_BENCH_SHIPPED_SIZES="${SPHEROMESH_BENCH_SHIPPED_SIZES:-$d_sizes}"
export SPHEROMESH_BENCH_ORIGINAL_SIZES="${SPHEROMESH_BENCH_ORIGINAL_SIZES:-$d_sizes}"
export SPHEROMESH_BENCH_MODEL="${SPHEROMESH_BENCH_MODEL:-$ROOT/models/spheroid-resunet-small.safetensors}"
CRITERION_ARGS="${CRITERION_ARGS:-$d_crit}"
TORCH_RUNS="${TORCH_RUNS:-$d_runs}"
TORCH_WARMUP="${TORCH_WARMUP:-1}"
TORCH_THREADS="${TORCH_THREADS:-2}"
unset RAYON_NUM_THREADS

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="${OUT:-$TARGET_DIR/bench-report/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
IMAGE="$OUT/synthetic-1024.png"
START="$(date +%s)"
FAILED=()

say() { echo "run.sh: $*" >&2; }
fail() { say "FAILED: $*"; FAILED+=("$*"); }

cpu="$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
mem="$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
MACHINE="$(nproc) cores ($(nproc --all) online), ${cpu:-unknown CPU}, $mem RAM, $(uname -sr), $(rustc --version 2>/dev/null)"
say "machine: $MACHINE"
say "output: $OUT"
load="$(cut -d' ' -f1 /proc/loadavg)"
NOTE=""
if awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
    say "WARNING: load average $load: other work is running, timings will be slow and noisy"
    NOTE="load average $load at start (machine not quiet). "
fi
if [ ! -f "$SPHEROMESH_BENCH_MODEL" ]; then
    say "WARNING: $SPHEROMESH_BENCH_MODEL missing: shipped-model benchmarks use parity weights"
    NOTE+="shipped weights missing: shipped forward timed with parity weights, end-to-end and RSS not representative. "
fi

# (a) criterion
if [ "${SKIP_CRITERION:-0}" != 1 ]; then
    say "(a) cargo bench --bench inference -- $CRITERION_ARGS"
    # shellcheck disable=SC2086 # CRITERION_ARGS is a word list on purpose
    SPHEROMESH_BENCH_SAVE_IMAGE="$IMAGE" cargo bench --bench inference -- $CRITERION_ARGS \
        2>&1 | tee "$OUT/criterion.log"
    [ "${PIPESTATUS[0]}" = 0 ] || fail "cargo bench (see $OUT/criterion.log)"
fi

# (b) PyTorch baseline
if [ "${SKIP_TORCH:-0}" != 1 ] && [ "$SPHEROMESH_BENCH_ORIGINAL_SIZES" != none ]; then
    say "(b) PyTorch forward, sizes $SPHEROMESH_BENCH_ORIGINAL_SIZES, $TORCH_RUNS runs, $TORCH_THREADS threads"
    if tools/parity/setup_venv.sh >"$OUT/setup_venv.log" 2>&1; then
        .venv-torch/bin/python benches/torch/forward.py --sizes "$SPHEROMESH_BENCH_ORIGINAL_SIZES" \
            --threads "$TORCH_THREADS" --runs "$TORCH_RUNS" --warmup "$TORCH_WARMUP" \
            >"$OUT/torch.jsonl" 2>"$OUT/torch.log" || fail "forward.py (see $OUT/torch.log)"
        cat "$OUT/torch.jsonl" >&2
    else
        fail "tools/parity/setup_venv.sh (see $OUT/setup_venv.log)"
    fi
fi

# (b2) ONNX Runtime baseline: the same network, exported from the same PyTorch weights
if [ "${SKIP_ONNX:-0}" != 1 ] && [ "$SPHEROMESH_BENCH_ORIGINAL_SIZES" != none ]; then
    say "(b2) ONNX Runtime forward, sizes $SPHEROMESH_BENCH_ORIGINAL_SIZES, $TORCH_RUNS runs, $TORCH_THREADS threads"
    if tools/parity/setup_venv.sh >"$OUT/setup_venv.log" 2>&1 \
        && .venv-torch/bin/python -m pip install -q onnx onnxruntime >"$OUT/onnx_pip.log" 2>&1; then
        .venv-torch/bin/python benches/onnx/forward.py --sizes "$SPHEROMESH_BENCH_ORIGINAL_SIZES" \
            --threads "$TORCH_THREADS" --runs "$TORCH_RUNS" --warmup "$TORCH_WARMUP" \
            --onnx-dir "$TARGET_DIR/onnx" >"$OUT/onnx.jsonl" 2>"$OUT/onnx.log" \
            || fail "onnx/forward.py (see $OUT/onnx.log)"
        cat "$OUT/onnx.jsonl" >&2
    else
        fail "ONNX Runtime set-up (see $OUT/setup_venv.log, $OUT/onnx_pip.log)"
    fi
fi

# (c) peak RSS of the CLI
if [ "${SKIP_RSS:-0}" != 1 ]; then
    say "(c) peak RSS of spheromesh segment"
    if [ ! -x /usr/bin/time ]; then
        say "installing GNU time"
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
        { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq time; } >"$OUT/apt.log" 2>&1 \
            || fail "apt-get install time (see $OUT/apt.log)"
    fi
    if [ ! -f "$IMAGE" ]; then
        # The criterion step writes the image; without it, let the bench binary write it
        # without benchmarking anything (--list only names the benchmarks).
        SPHEROMESH_BENCH_SAVE_IMAGE="$IMAGE" SPHEROMESH_BENCH_SHIPPED_SIZES=none \
            SPHEROMESH_BENCH_ORIGINAL_SIZES=none cargo bench --bench inference -- --list \
            >"$OUT/image.log" 2>&1 || fail "writing $IMAGE (see $OUT/image.log)"
    fi
    if cargo build --release --bin spheromesh >"$OUT/build.log" 2>&1; then
        if [ -x /usr/bin/time ] && [ -f "$IMAGE" ]; then
            /usr/bin/time -v -o "$OUT/rss.txt" "$TARGET_DIR/release/spheromesh" segment "$IMAGE" \
                --model "$SPHEROMESH_BENCH_MODEL" --out /dev/null >"$OUT/segment.log" 2>&1 \
                || fail "spheromesh segment (see $OUT/segment.log)"
            grep -E "Maximum resident|Elapsed|Exit status" "$OUT/rss.txt" >&2
        fi
    else
        fail "cargo build --release --bin spheromesh (see $OUT/build.log)"
    fi
fi

# (c2) peak RSS of the original network at 1024, spheromesh and PyTorch one after the other
if [ "${SKIP_RSS_ORIGINAL:-$QUICK}" != 1 ] && [ "${SKIP_RSS:-0}" != 1 ] && [ -x /usr/bin/time ] \
    && [ -f "$IMAGE" ] && [ -x "$TARGET_DIR/release/spheromesh" ]; then
    say "(c2) peak RSS of one original-network inference at 1024 (spheromesh, then PyTorch)"
    ORIG_PTH="$TARGET_DIR/bench-report/original.pth"
    if tools/parity/setup_venv.sh >"$OUT/setup_venv.log" 2>&1 \
        && { [ -f "$ORIG_PTH" ] || .venv-torch/bin/python benches/torch/save_checkpoint.py "$ORIG_PTH"; }; then
        /usr/bin/time -v -o "$OUT/rss-original.txt" "$TARGET_DIR/release/spheromesh" segment "$IMAGE" \
            --model "$ORIG_PTH" --input-size 1024 --tta off --out /dev/null >"$OUT/segment-original.log" 2>&1 \
            || fail "spheromesh segment, original network (see $OUT/segment-original.log)"
        /usr/bin/time -v -o "$OUT/rss-torch.txt" .venv-torch/bin/python benches/torch/forward.py \
            --sizes 1024 --runs 1 --warmup 0 --weights random --threads "$TORCH_THREADS" \
            >"$OUT/torch-rss.jsonl" 2>"$OUT/torch-rss.log" || fail "forward.py for memory (see $OUT/torch-rss.log)"
        grep -H "Maximum resident" "$OUT/rss-original.txt" "$OUT/rss-torch.txt" >&2
    else
        fail "original-network checkpoint (see $OUT/setup_venv.log)"
    fi
fi

# (d) report
say "(d) report"
RSS_ARG=(); [ -f "$OUT/rss.txt" ] && RSS_ARG=(--rss "$OUT/rss.txt")
[ -f "$OUT/rss-original.txt" ] && RSS_ARG+=(--rss-original "$OUT/rss-original.txt")
[ -f "$OUT/rss-torch.txt" ] && RSS_ARG+=(--rss-torch "$OUT/rss-torch.txt")
python3 benches/report.py --criterion-dir "$TARGET_DIR/criterion" --since "$START" \
    --torch "$OUT/torch.jsonl" --onnx "$OUT/onnx.jsonl" "${RSS_ARG[@]}" --machine "$MACHINE" --note "${NOTE% }" \
    >"$OUT/report.md" || fail "report.py"
cat "$OUT/report.md"

if [ "${#FAILED[@]}" -gt 0 ]; then
    say "${#FAILED[@]} step(s) failed:"
    printf '  - %s\n' "${FAILED[@]}" >&2
    exit 1
fi
say "done: $OUT/report.md"
