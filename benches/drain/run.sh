#!/usr/bin/env bash
# Drain benchmark: makespan of a 60-task batch (50 x 100 ms, 10 x 2 s, seeded shuffle)
# published at once, for the old consumer (3 processes, prefetch 4, one task at a time)
# and for spheromesh.
#
#   bash benches/drain/run.sh            # 3 runs each, prints makespans
#
# Ideal with 3 workers: total work = 50*0.1 + 10*2 = 25 s -> 25/3 = 8.3 s, bounded below by
# the longest chain a worker must do. The old consumer's prefetch of 4 lets one process hoard
# several 2 s tasks while the others go idle (head-of-line blocking).
set -euo pipefail
cd "$(dirname "$0")"
HERE=$(pwd)
ROOT=$(cd ../.. && pwd)
RUNS=${RUNS:-3}
WORKERS=${WORKERS:-3}

URL=$(bash "$ROOT/scripts/rabbitmq.sh")

# pika in a venv under benches/drain/.venv (gitignored).
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q "pika>=1.3,<2"
fi
PY=.venv/bin/python

makespan() { # publish_end done_file -> seconds from publish end to last finish
    awk -v t0="$1" 'BEGIN{m=0} {if ($2>m) m=$2} END{printf "%.2f\n", m-t0}' "$2"
}

old_consumer_run() {
    local queue="drain-bench-old-$$-$1" done
    done=$(mktemp)
    local t0 pids=()
    t0=$($PY publish.py --url "$URL" --queue "$queue")
    for _ in $(seq 1 "$WORKERS"); do
        $PY old_consumer.py --url "$URL" --queue "$queue" --done "$done" &
        pids+=($!)
    done
    while [ "$(wc -l <"$done")" -lt 60 ]; do sleep 0.05; done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait "${pids[@]}" 2>/dev/null || true
    makespan "$t0" "$done"
    rm -f "$done"
    rabbitmqctl -q delete_queue "$queue" >/dev/null 2>&1 || true
}

echo "old consumer x$WORKERS processes (prefetch 4, one task at a time):"
for r in $(seq 1 "$RUNS"); do
    echo "  run $r: $(old_consumer_run "$r") s"
done

# TODO(lead): spheromesh side - wire this once `spheromesh node --model synthetic:MS` exists
# (the synthetic model must sleep parameters.synthetic_ms per task). Start $WORKERS nodes
# meshed together with RABBITMQ_URL=$URL RABBITMQ_QUEUE=<queue> UPLOADS_ROOT=<dir with
# bench/a.png>, a callback sink (the publisher's --callback-base) that records finish times,
# publish with publish.py, and compute the makespan the same way as above.
echo "spheromesh: TODO - needs 'spheromesh node --model synthetic:MS' (see run.sh)"
