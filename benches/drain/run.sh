#!/usr/bin/env bash
# Drain benchmark: makespan (last finish - first start) of a 60-task batch (50 x 100 ms,
# 10 x 2 s, seeded shuffle) waiting in the queue, for
#   1. the old consumer: 3 processes, prefetch 4, one task at a time, ack after;
#   2. spheromesh's gated consumer, in-process: 3 run_consumer instances with a 1-slot
#      test-double runner each (tests/broker.rs, ignored test drain_benchmark_...);
#   3. TODO(lead): real `spheromesh node` processes (see the end).
#
#   bash benches/drain/run.sh            # RUNS=3 runs each, prints makespans
#
# Lower bound with 3 workers: total work 50*0.1 + 10*2 = 25 s -> 8.33 s. The old consumer's
# prefetch of 4 lets one process hoard several 2 s tasks while the others run dry.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd ../.. && pwd)
RUNS=${RUNS:-3}
WORKERS=${WORKERS:-3}
PORT=${DRAIN_BENCH_CALLBACK_PORT:-18765}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

URL=$(bash "$ROOT/scripts/rabbitmq.sh")

# pika in a venv under benches/drain/.venv (gitignored).
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q "pika>=1.3,<2"
fi
PY=.venv/bin/python

publish() { # queue
    $PY publish.py --url "$URL" --queue "$1" --callback-base "http://127.0.0.1:$PORT/api/images"
}

old_consumer_run() {
    local queue="drain-bench-old-$$-$1" done pids=()
    done=$(mktemp)
    publish "$queue"
    for _ in $(seq 1 "$WORKERS"); do
        $PY old_consumer.py --url "$URL" --queue "$queue" --done "$done" &
        pids+=($!)
    done
    while [ "$(wc -l <"$done")" -lt 60 ]; do sleep 0.05; done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait "${pids[@]}" 2>/dev/null || true
    awk 'NR==1{s=$2;f=$3} {if($2<s)s=$2; if($3>f)f=$3} END{printf "%.2f\n", f-s}' "$done"
    rm -f "$done"
    rabbitmqctl -q delete_queue "$queue" >/dev/null 2>&1 || true
}

gated_run() {
    local queue="drain-bench-gated-$$-$1"
    publish "$queue"
    (cd "$ROOT" && DRAIN_BENCH_QUEUE="$queue" DRAIN_BENCH_CALLBACK_PORT="$PORT" \
        DRAIN_BENCH_WORKERS="$WORKERS" RABBITMQ_URL="$URL" \
        cargo test -q --release --test broker -- --ignored --exact \
        drain_benchmark_gated_consumers --nocapture 2>/dev/null) |
        sed -n 's/^DRAIN_BENCH makespan_s=//p'
    rabbitmqctl -q delete_queue "$queue" >/dev/null 2>&1 || true
    rabbitmqctl -q delete_queue "$queue.dead_letter" >/dev/null 2>&1 || true
}

echo "old consumer x$WORKERS processes (prefetch 4, one task at a time):"
for r in $(seq 1 "$RUNS"); do echo "  run $r: $(old_consumer_run "$r") s"; done

(cd "$ROOT" && cargo test -q --release --test broker --no-run 2>/dev/null)
echo "spheromesh gated consumer x$WORKERS (in-process, 1-slot test-double runners, no mesh):"
for r in $(seq 1 "$RUNS"); do echo "  run $r: $(gated_run "$r") s"; done

# TODO(lead): spheromesh node side - wire this once `spheromesh node --model synthetic:MS`
# exists. Start $WORKERS nodes meshed together with RABBITMQ_URL=$URL
# RABBITMQ_QUEUE=<queue> UPLOADS_ROOT=<dir with bench/100.png, bench/2000.png>, a callback
# sink on 127.0.0.1:$PORT that records arrival times, publish with publish.py, and report
# last callback - first start. Note: the synthetic model needs the per-task duration
# (publish.py puts it in parameters.synthetic_ms and in the image width of bench/<ms>.png).
echo "spheromesh nodes: TODO(lead) - needs 'spheromesh node --model synthetic:MS' (see run.sh)"
