#!/usr/bin/env bash
# The whole test suite, with its own set-up: the README's test command, and exactly what
# .ci/run runs.
#
#   bash scripts/test.sh
#
# 1. style gates: `cargo fmt --check` and `cargo clippy --workspace --all-targets -D warnings`
#    (the rustfmt and clippy components are added when missing);
# 2. services: RabbitMQ for the broker tests (scripts/rabbitmq.sh installs it with apt-get
#    and starts it when none answers);
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

step "cargo test --release --workspace"
cargo test --release --workspace
