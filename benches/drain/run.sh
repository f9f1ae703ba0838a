#!/usr/bin/env bash
# Drain benchmark: makespan (last finish - first start) of a 60-task batch (50 x 100 ms,
# 10 x 2 s, seeded shuffle) waiting in the queue, for
#   1. the old consumer: 3 processes, prefetch 4, one task at a time, ack after;
#   2. spheromesh's gated consumer, in-process: 3 run_consumer instances with a 1-slot
#      test-double runner each (tests/broker.rs, ignored test drain_benchmark_...);
#   3. real `spheromesh node` processes (mesh_drain.py): $WORKERS nodes, 1 slot each, all
#      consuming, meshed (a pulled task may run on an idle peer).
#
#   bash benches/drain/run.sh            # RUNS=3 runs each (publish seeds 1..RUNS)
#
# Lower bound with 3 workers: total work 50*0.1 + 10*2 = 25 s -> 8.33 s. The old consumer's
# prefetch of 4 lets one process hoard several 2 s tasks while the others run dry.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd ../.. && pwd)
RUNS=${RUNS:-5}
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

publish() { # queue seed
    $PY publish.py --url "$URL" --queue "$1" --seed "$2" \
        --callback-base "http://127.0.0.1:$PORT/api/images"
}

old_consumer_run() {
    local queue="drain-bench-old-$$-$1" done pids=()
    done=$(mktemp)
    publish "$queue" "$1"
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
    publish "$queue" "$1"
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

mesh_run() {
    local queue="drain-bench-mesh-$$-$1"
    publish "$queue" "$1"
    $PY mesh_drain.py --url "$URL" --queue "$queue" --port "$PORT" --nodes "$WORKERS"
    rabbitmqctl -q delete_queue "$queue" >/dev/null 2>&1 || true
    rabbitmqctl -q delete_queue "$queue.dead_letter" >/dev/null 2>&1 || true
}

[ -x "$CARGO_TARGET_DIR/release/spheromesh" ] || (cd "$ROOT" && cargo build --release)
echo "spheromesh nodes x$WORKERS (1 slot each, meshed, synthetic:width test double):"
for r in $(seq 1 "$RUNS"); do echo "  run $r: $(mesh_run "$r") s"; done
echo "lower bound: max(total work / $WORKERS slots, longest task) = $(python3 -c "print(f'{max(25/$WORKERS, 2):.2f}')") s"
# What any consumer taking tasks in queue order, one per free slot, with zero overhead
# achieves (greedy list scheduling of the published order): the floor for FIFO draining.
for r in $(seq 1 "$RUNS"); do
    python3 - "$r" "$WORKERS" <<'PY'
import heapq, random, sys
seed, workers = int(sys.argv[1]), int(sys.argv[2])
d = [2000] * 10 + [100] * 50
random.Random(seed).shuffle(d)
slots = [0.0] * workers
for ms in d:
    heapq.heappush(slots, heapq.heappop(slots) + ms / 1000)
print(f"  seed {seed}: FIFO greedy floor {max(slots):.2f} s")
PY
done
