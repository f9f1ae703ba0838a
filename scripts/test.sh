#!/usr/bin/env bash
# The whole test suite, with its own set-up: the README's test command, and exactly what
# .ci/run runs.
#
#   bash scripts/test.sh
#
# 1. style gates: `cargo fmt --check` and `cargo clippy --workspace --all-targets -D warnings`
#    (the rustfmt and clippy components are added when missing);
# 2. services and tools: RabbitMQ for the broker tests (scripts/rabbitmq.sh installs it with
#    apt-get and starts it when none answers); iproute2 and iptables for the chaos suite
#    (root); Chromium for the cluster page test; schemathesis (a virtual environment in
#    .venv-schemathesis) for the API fuzz test; promtool for the alert rules
#    (scripts/check-alert-rules.sh installs it and runs `promtool test rules`);
#    kubernetes-validate (.venv-kubernetes) for the Kubernetes manifests
#    (scripts/check-kubernetes.sh); docker-compose for the orchestrator suite, which builds
#    its own images and needs the machine's Docker engine running (and root for swarm);
# 3. `cargo test --release --workspace` (release on purpose: candle is ~30x slower
#    unoptimised).
#
# Under CI=true, tests that need a service fail instead of skipping when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "==> $*" >&2; }

if command -v rustup >/dev/null 2>&1; then
    for component in rustfmt clippy; do
        if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
            step "adding the ${component} component"
            rustup component add "${component}"
        fi
    done
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --release --workspace --all-targets -- -D warnings

step "starting RabbitMQ"
RABBITMQ_URL=$(bash scripts/rabbitmq.sh)
export RABBITMQ_URL

# The chaos suite (tests/chaos.rs) puts nodes in network namespaces and cuts links with
# iptables; install the tools when a fresh machine lacks them.
if ! command -v ip >/dev/null 2>&1 || ! command -v iptables >/dev/null 2>&1; then
    step "installing iproute2 and iptables for the chaos suite"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq iproute2 iptables >/dev/null
fi

SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
# The cluster page test (tests/operations.rs) opens the page in a real headless browser.
if ! command -v chromium >/dev/null 2>&1; then
    step "installing chromium for the cluster page test"
    $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

# The API fuzz test runs schemathesis against a live node.
if [ ! -x .venv-schemathesis/bin/st ]; then
    step "installing schemathesis into .venv-schemathesis"
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
        $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    python3 -m venv .venv-schemathesis
    .venv-schemathesis/bin/pip install -q schemathesis
fi

step "alert rules: promtool check and test"
bash scripts/check-alert-rules.sh

step "Kubernetes manifests: offline validation"
bash scripts/check-kubernetes.sh

# The orchestrator suite (tests/orchestrator.rs) drives the Docker engine with docker-compose
# and docker swarm; it builds its own images (scripts/docker-image.sh, which installs
# debootstrap when missing). The engine itself is the machine's; docker-compose is added.
if ! command -v docker-compose >/dev/null 2>&1; then
    step "installing docker-compose for the orchestrator suite"
    $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
fi

step "cargo test --release --workspace"
cargo test --release --workspace
