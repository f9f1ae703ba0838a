#!/usr/bin/env bash
# Installs (Debian package) and starts a local RabbitMQ for the broker tests, then prints
# its AMQP URL on stdout. Idempotent: a broker that already answers is left as it is.
#
#   bash scripts/rabbitmq.sh        # -> amqp://guest:guest@127.0.0.1:5672/%2f
#
# No systemd on the CI/dev machines: the server is started detached and we wait for it
# with `rabbitmqctl await_startup`. Diagnostics go to stderr so that stdout is just the URL.
set -euo pipefail

URL="amqp://guest:guest@127.0.0.1:5672/%2f"

log() { echo "rabbitmq.sh: $*" >&2; }

running() {
    command -v rabbitmqctl >/dev/null 2>&1 && rabbitmqctl -q status >/dev/null 2>&1
}

if running; then
    # The app may have been stopped (stop_app) by an outage test that died half-way.
    rabbitmqctl -q start_app >/dev/null 2>&1 || true
    log "already running"
    echo "$URL"
    exit 0
fi

if ! command -v rabbitmq-server >/dev/null 2>&1; then
    log "installing rabbitmq-server (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq rabbitmq-server >&2
fi

# The Debian package's service script may or may not have started it (no systemd here).
if ! running; then
    log "starting rabbitmq-server"
    if ! service rabbitmq-server start >&2 2>&1; then
        rabbitmq-server -detached >&2 2>&1 || true
    fi
fi

# await_startup needs the node's Erlang VM up; give it a moment to appear.
for _ in $(seq 1 60); do
    if rabbitmqctl -q await_startup --timeout 60 >/dev/null 2>&1; then
        break
    fi
    sleep 1
done

if ! running; then
    log "rabbitmq did not start; see /var/log/rabbitmq/"
    exit 1
fi
log "started"
echo "$URL"
