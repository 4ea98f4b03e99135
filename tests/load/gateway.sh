#!/usr/bin/env bash
# The gateway's added latency: oha at a constant rate against `tollgate mock-llm` directly,
# then against the release binary on PostgreSQL forwarding to that same mock (hold before,
# capture after, a usage record), in one run; then each at its most (no rate limit).
# A benchmark, not a test.
#
#   tests/load/gateway.sh [postgres://…/db] [seconds per step] [rates…]
#
# Needs oha (`cargo install oha`) on PATH and target/release/tollgate.
set -euo pipefail
cd "$(dirname "$0")/../.."
admin=${1:-postgres://postgres@127.0.0.1:5432/test}
seconds=${2:-15}
shift $(( $# > 2 ? 2 : $# ))
rates=${*:-100 500 1000}
bin=target/release/tollgate
work=$(mktemp -d)
schema="gwbench_$$"
PGOPTIONS="-c client_min_messages=warning" psql "$admin" -qc "CREATE SCHEMA $schema"
cleanup() {
    kill "${server:-0}" "${mock:-0}" 2>/dev/null || true
    PGOPTIONS="-c client_min_messages=warning" psql "$admin" -qc "DROP SCHEMA $schema CASCADE" || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

mock_port=$(free_port)
"$bin" mock-llm --port "$mock_port" 2> "$work/mock.log" &
mock=$!

port=$(free_port)
sed '/^rate_limit = /d' config/default.toml > "$work/catalog.toml"
export TOLLGATE_CONFIG_DIR="$PWD/config" TOLLGATE_CONFIG="$work/catalog.toml"
export TOLLGATE__SERVER__PORT="$port"
export TOLLGATE__DATABASE__URL="$admin?options=-csearch_path%3D$schema"
export TOLLGATE__DATABASE__AUTO_MIGRATE=true
export TOLLGATE__HTTP__ANONYMOUS_RATE_LIMIT__REQUESTS=100000000
export TOLLGATE__HTTP__USER_RATE_LIMIT__REQUESTS=100000000
export TOLLGATE__AUTH__ADMIN_API_KEY="bench-admin-key-0123456789abcdef"
export TOLLGATE__AUTH__JWT_SECRET="bench-jwt-secret-0123456789abcdef0123456"
export TOLLGATE__LOG__LEVEL=warn
export OPENAI_API_KEY=sk-bench TOLLGATE__LLM__OPENAI_BASE_URL="http://127.0.0.1:$mock_port/v1"
"$bin" serve > "$work/server.log" 2>&1 &
server=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 50); do curl -sf "$base/health" >/dev/null && break; sleep 0.2; done

session=$(curl -sf -X POST "$base/v1/auth/signup" -H 'content-type: application/json' \
    -d '{"email":"bench@example.com","password":"correct horse battery"}')
token=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["tokens"]["access_token"])' "$session")
account=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["account"]["id"])' "$session")
key=$(curl -sf -X POST "$base/v1/api-keys" -H "authorization: Bearer $token" \
    -H 'content-type: application/json' -d '{"name":"bench"}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
curl -sf -X POST "$base/v1/admin/accounts/$account/credits" \
    -H "authorization: Bearer $TOLLGATE__AUTH__ADMIN_API_KEY" -H 'content-type: application/json' \
    -d '{"delta":1000000000,"reason":"benchmark"}' >/dev/null

body='{"model":"gpt-4o-mini","max_tokens":64,"messages":[{"role":"user","content":"What does the ledger hold before a call?"}]}'
measure() { # url rate|max
    local url=$1 rate=$2 args=()
    if [ "$rate" = max ]; then args=(-c 64); else args=(-q "$rate" -c 64 --latency-correction); fi
    oha --no-tui --output-format json -z "${seconds}s" "${args[@]}" -m POST \
        -H "authorization: Bearer $key" -H 'content-type: application/json' -d "$body" "$url" \
        > "$work/out.json"
    python3 - "$work/out.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s, p = r["summary"], r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {})
print(f'{s["requestsPerSec"]:.0f} req/s  p50 {p["p50"]*1000:.2f} ms  p99 {p["p99"]*1000:.2f} ms  '
      f'ok {s["successRate"]*100:.1f}%  statuses {codes}')
PY
}
for rate in $rates max; do
    printf 'mock directly at %s: ' "$rate"; measure "http://127.0.0.1:$mock_port/v1/chat/completions" "$rate"
    printf 'gateway at %s:       ' "$rate"; measure "$base/v1/chat/completions" "$rate"
done
curl -sf "$base/v1/usage" -H "authorization: Bearer $key" \
    | python3 -c 'import json,sys; d=json.load(sys.stdin)["days"]; print("calls recorded:", sum(x["calls"] for x in d))'
kill "$server"; wait "$server" 2>/dev/null || true
"$bin" ledger verify
