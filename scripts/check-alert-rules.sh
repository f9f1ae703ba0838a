#!/usr/bin/env bash
# Checks the monitoring files under compose/ with promtool (Debian's `prometheus` package,
# installed here when missing):
#
#   1. prometheus.yml is a valid configuration and its rule file parses;
#   2. `promtool test rules compose/prometheus/alerts.test.yml` passes;
#   3. every alert in alerts.yml has at least one test that names it;
#   4. the Grafana dashboard is valid JSON and every panel query parses as PromQL
#      (written into a throwaway rule file that promtool checks).
#
# Run by scripts/test.sh; on its own: `bash scripts/check-alert-rules.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
if ! command -v promtool >/dev/null 2>&1; then
    echo "check-alert-rules: installing prometheus for promtool"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# The package starts a Prometheus server; these checks need only the tool.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    $SUDO systemctl stop prometheus || true
fi

rules=compose/prometheus/alerts.yml
tests=compose/prometheus/alerts.test.yml
dashboard=compose/grafana/dashboards/spheromesh.json

promtool check config compose/prometheus/prometheus.yml
promtool check rules "$rules"
(cd compose/prometheus && promtool test rules "$(basename "$tests")")

missing=0
for alert in $(sed -n 's/^ *- alert: *\([A-Za-z0-9_]*\).*/\1/p' "$rules"); do
    if ! grep -q "alertname: *$alert\$" "$tests"; then
        echo "check-alert-rules: alert $alert has no test in $tests" >&2
        missing=1
    fi
done
[ "$missing" = 0 ] || exit 1

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3 - "$dashboard" "$scratch/dashboard-rules.yml" <<'EOF'
import json, sys
dashboard = json.load(open(sys.argv[1]))
lines = ["groups:", "  - name: dashboard-queries", "    rules:"]
count = 0
for panel in dashboard["panels"]:
    for target in panel.get("targets", []):
        expr = target["expr"].replace("$instance", ".*")
        count += 1
        lines.append(f"      - record: dashboard:query_{count}")
        lines.append(f"        expr: {json.dumps(expr)}")
if count == 0:
    sys.exit("check-alert-rules: the dashboard has no queries")
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
print(f"check-alert-rules: {len(dashboard['panels'])} dashboard panels, {count} queries")
EOF
promtool check rules "$scratch/dashboard-rules.yml"
echo "check-alert-rules: all good"
