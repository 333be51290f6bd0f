#!/usr/bin/env bash
# Checks the operator files in docs/ops with promtool: the alert rules parse, their unit tests
# pass (each alert fires, and stays quiet, on synthetic series), and every query of the Grafana
# dashboard parses as PromQL. Installs Debian's `prometheus` package (for promtool) if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
    sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
promtool check rules docs/ops/alerts.yml
promtool test rules docs/ops/alerts.test.yml
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - docs/ops/grafana-dashboard.json > "$tmp/dashboard-rules.yml" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print("groups:\n  - name: dashboard-queries\n    rules:")
for p in d["panels"]:
    for t in p.get("targets", []):
        expr = t["expr"].replace("$job", "kms")
        print(f"      - record: dashboard:panel{p['id']}:{t['refId']}\n        expr: {json.dumps(expr)}")
PY
promtool check rules "$tmp/dashboard-rules.yml"
