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
admin=${TOLLGATE_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}
bin=target/release/tollgate
work=$(mktemp -d)
schema="checkbench_$$"
quiet=(env PGOPTIONS="-c client_min_messages=warning")
cleanup() {
    kill "${server:-0}" 2>/dev/null || true
    [ "$backend" = postgres ] && "${quiet[@]}" psql "$admin" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

port=$(free_port)
# The plans' own rate limits would answer 429 long before the database is the limit.
sed '/^rate_limit = /d' config/default.toml > "$work/catalog.toml"
export TOLLGATE_CONFIG_DIR="$PWD/config" TOLLGATE_CONFIG="$work/catalog.toml"
export TOLLGATE__SERVER__PORT="$port"
if [ "$backend" = postgres ]; then
    "${quiet[@]}" psql "$admin" -qc "CREATE SCHEMA $schema"
    export TOLLGATE__DATABASE__URL="$admin?options=-csearch_path%3D$schema"
    export TOLLGATE__DATABASE__AUTO_MIGRATE=true
else
    export TOLLGATE__DATABASE__URL="sqlite://$work/tollgate.db"
fi
export TOLLGATE__HTTP__ANONYMOUS_RATE_LIMIT__REQUESTS=100000000
export TOLLGATE__HTTP__USER_RATE_LIMIT__REQUESTS=100000000
export TOLLGATE__AUTH__JWT_SECRET="bench-jwt-secret-0123456789abcdef0123456"
export TOLLGATE__AUTH__ACCESS_TOKEN_TTL_SECONDS=7200
export TOLLGATE__LOG__LEVEL=warn
"$bin" serve > "$work/server.log" 2>&1 &
server=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do curl -sf "$base/health" >/dev/null && break; sleep 0.2; done
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
echo "server RSS after the runs: $(( $(awk '/VmRSS/ {print $2}' "/proc/$server/status") / 1024 )) MB"
