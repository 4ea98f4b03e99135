#!/usr/bin/env bash
# Entitlement checks at a constant rate, beside `GET /v1/credits` at the same rate, against
# the release binary; then each at its most. A benchmark, not a test.
#
#   tests/load/check.sh [postgres|sqlite] [seconds per step] [rounds] [rate]
#
# Needs oha (`cargo install oha`) on PATH and target/release/tollgate.
set -euo pipefail
cd "$(dirname "$0")/../.."
backend=${1:-postgres}
seconds=${2:-10}
rounds=${3:-3}
rate=${4:-1000}
source tests/load/common.sh
start_server checkbench
token=$(curl -sf -X POST "$base/v1/auth/signup" -H 'content-type: application/json' \
    -d '{"email":"check@bench.test","password":"correct horse battery"}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens"]["access_token"])')

measure() { # method path rate|max
    local method=$1 path=$2 at=$3 args=()
    if [ "$at" = max ]; then args=(-c 32); else args=(-q "$at" -c 32 --latency-correction); fi
    if [ "$method" = POST ]; then
        args+=(-m POST -H 'content-type: application/json' -d '{"kind":"action","name":"short_chat"}')
    fi
    oha --no-tui --output-format json -z "${seconds}s" "${args[@]}" \
        -H "authorization: Bearer $token" "$base$path" > "$work/out.json"
    python3 - "$work/out.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s, p = r["summary"], r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {})
print(f'{s["requestsPerSec"]:.0f} req/s  p50 {p["p50"]*1000:.2f} ms  p99 {p["p99"]*1000:.2f} ms  statuses {codes}')
PY
}
for round in $(seq 1 "$rounds"); do
    for at in "$rate" max; do
        printf 'round %s, GET /v1/credits at %s:            ' "$round" "$at"; measure GET /v1/credits "$at"
        printf 'round %s, POST /v1/entitlements/check at %s: ' "$round" "$at"; measure POST /v1/entitlements/check "$at"
    done
done
echo "server RSS after the runs: $(rss_mb) MB"
