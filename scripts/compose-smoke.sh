#!/usr/bin/env bash
# Smoke test of the compose deployment: builds spheromesh:local, starts the 3-node mesh of
# compose/docker-compose.yml, waits until all three containers are healthy, segments
# examples/brightfield.png through node 1, checks that node 1's /cluster lists the two
# other nodes as routable, checks that node 1 forwards work to its peers (QUIC + mutual
# TLS between containers), prints a summary and tears everything down (volumes included).
#
#   bash scripts/compose-smoke.sh          # KEEP=1 leaves the mesh running
#
# It runs as its own compose project (spheromesh-smoke) on host ports 15002/15012/15022
# (SMOKE_PORT_BASE) with a fresh cluster key, so it does not touch a real deployment.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

PROJECT="${SMOKE_PROJECT:-spheromesh-smoke}"
BASE="${SMOKE_PORT_BASE:-15002}"
export ML_BIND=127.0.0.1
export ML1_HTTP_PORT="$BASE" ML2_HTTP_PORT="$((BASE + 10))" ML3_HTTP_PORT="$((BASE + 20))"
export MAX_CONCURRENT_TASKS="${MAX_CONCURRENT_TASKS:-1}"
export QUEUE_LIMIT="${QUEUE_LIMIT:-4}"
WAIT_HEALTHY_S="${WAIT_HEALTHY_S:-180}"
COMPOSE=(docker-compose -p "$PROJECT" -f compose/docker-compose.yml)

log() { echo "compose-smoke: $*" >&2; }
fail() { log "FAIL: $*"; exit 1; }

cleanup() {
    local rc=$?
    if [[ $rc -ne 0 ]]; then
        log "logs of the failed run:"
        "${COMPOSE[@]}" ps >&2 || true
        "${COMPOSE[@]}" logs --no-color --tail=40 >&2 || true
    fi
    if [[ -n "${KEEP:-}" ]]; then
        log "KEEP=1: leaving $PROJECT running ('${COMPOSE[*]} down -v' to remove)"
    else
        log "docker-compose down -v"
        "${COMPOSE[@]}" down -v --remove-orphans >&2 || true
    fi
    exit $rc
}

# ---- image -------------------------------------------------------------------------
log "building the image"
bash scripts/docker-image.sh

# A fresh cluster key for this run (the environment wins over compose/.env).
SPHEROMESH_CLUSTER_KEY="$(docker run --rm "${SPHEROMESH_IMAGE:-spheromesh:local}" certs key 2>/dev/null)"
export SPHEROMESH_CLUSTER_KEY
[[ ${#SPHEROMESH_CLUSTER_KEY} -eq 64 ]] || fail "certs key printed '$SPHEROMESH_CLUSTER_KEY'"

trap cleanup EXIT
"${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true

# ---- up ----------------------------------------------------------------------------
log "docker-compose up -d"
"${COMPOSE[@]}" up -d >&2
"${COMPOSE[@]}" logs --no-color certs >&2

cid() { "${COMPOSE[@]}" ps -q "$1"; }
health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$(cid "$1")"; }

log "waiting for ml1 ml2 ml3 to be healthy (at most ${WAIT_HEALTHY_S}s)"
start=$SECONDS
while :; do
    states="$(for s in ml1 ml2 ml3; do echo -n "$s=$(health $s) "; done)"
    [[ "$states" == "ml1=healthy ml2=healthy ml3=healthy " ]] && break
    for s in ml1 ml2 ml3; do
        restarts="$(docker inspect -f '{{.RestartCount}}' "$(cid $s)")"
        [[ "$restarts" == 0 ]] || fail "$s restarted $restarts times: $states"
    done
    (( SECONDS - start < WAIT_HEALTHY_S )) || fail "not healthy after ${WAIT_HEALTHY_S}s: $states"
    sleep 2
done
log "all healthy after $((SECONDS - start))s: $states"
for s in ml1 ml2 ml3; do
    "${COMPOSE[@]}" logs --no-color "$s" | grep -m1 'ADVERTISE_HOST=' >&2 || true
done

URL1="http://127.0.0.1:$ML1_HTTP_PORT"

# ---- membership --------------------------------------------------------------------
log "waiting for node 1's /cluster to list 2 routable members"
start=$SECONDS
while :; do
    cluster="$(curl -fsS --max-time 5 "$URL1/cluster" || true)"
    routable="$(jq -r '[.members[] | select(.routable)] | length' <<<"$cluster" 2>/dev/null || echo 0)"
    [[ "$routable" == 2 ]] && break
    (( SECONDS - start < 60 )) || { echo "$cluster" >&2; fail "node 1 sees $routable routable members, want 2"; }
    sleep 1
done
echo "== /cluster of ml1 =="
jq -c '{self: .self | {id, http_addr, quic_addr, gossip_addr},
        members: [.members[] | {id, status, routable, breaker, gossip_addr, quic_addr}]}' <<<"$cluster"
ids="$(jq -r '[.members[].id] | sort | join(",")' <<<"$cluster")"
[[ "$ids" == "ml2,ml3" ]] || fail "members are '$ids', want ml2,ml3"

# ---- one segmentation --------------------------------------------------------------
log "POST examples/brightfield.png to ml1"
result="$(curl -fsS --max-time 120 -H 'Content-Type: image/png' \
    --data-binary @examples/brightfield.png "$URL1/segment")" || fail "POST /segment failed"
echo "== /segment on ml1 =="
jq -c '{task_id, polygons: (.polygons | length),
        external: ([.polygons[] | select(.type == "external")] | length),
        processing_time, processed_by, entry_node, hops, image_width, image_height}' <<<"$result"
n="$(jq '.polygons | length' <<<"$result")"
(( n > 0 )) || fail "no polygons"
[[ "$(jq -r .entry_node <<<"$result")" == ml1 ]] || fail "entry_node is not ml1"

# ---- forwarding between containers --------------------------------------------------
# Node 1 has MAX_CONCURRENT_TASKS slots; 6 requests at once must spill over to peers.
log "6 concurrent POSTs to ml1 (forwarding over QUIC to ml2/ml3)"
tmp="$(mktemp -d)"
for i in 1 2 3 4 5 6; do
    curl -sS --max-time 120 -o "$tmp/$i.json" -w '%{http_code}\n' -H 'Content-Type: image/png' \
        --data-binary @examples/brightfield.png "$URL1/segment" >"$tmp/$i.code" &
done
wait
echo "== 6 concurrent on ml1: http codes / processed_by =="
cat "$tmp"/*.code | sort | uniq -c
jq -r '.processed_by // ("error: " + (.error // "?"|tostring))' "$tmp"/*.json | sort | uniq -c
others="$(jq -r 'select(.processed_by != null and .processed_by != "ml1") | .processed_by' "$tmp"/*.json | wc -l)"
okc="$(grep -c '^200$' "$tmp"/*.code | awk -F: '{s+=$2} END {print s}')"
rm -rf "$tmp"
[[ "$okc" == 6 ]] || fail "$okc of 6 concurrent requests got 200"
(( others > 0 )) || fail "ml1 forwarded nothing to its peers"

# ---- metrics -----------------------------------------------------------------------
echo "== metrics of ml1 =="
curl -fsS --max-time 5 "$URL1/metrics" \
    | grep -E '^(ml_tasks_processed_total|ml_active_tasks|mesh_peers|mesh_tasks_forwarded_total|mesh_breakers_open)' \
    || fail "no metrics"

echo "compose-smoke: PASS"
