#!/usr/bin/env bash
# The official OpenAI and Anthropic Python SDKs against a running tollgate (the mock
# provider answers every model), on SQLite or PostgreSQL, then `tollgate ledger verify`.
#
#   tests/sdk/run.sh [DATABASE_URL]     # default: a fresh SQLite file
#
# Then reads /metrics with the Prometheus client's OpenMetrics parser (tests/sdk/metrics.py).
# Needs `pip install openai anthropic prometheus-client` (CI pins the versions).
# TOLLGATE_BIN overrides the binary (default target/debug/tollgate).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
bin=${TOLLGATE_BIN:-$root/target/debug/tollgate}
work=$(mktemp -d)
trap 'kill "${server:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export TOLLGATE_CONFIG_DIR="$root/config"
export TOLLGATE__SERVER__PORT="$port"
export TOLLGATE__DATABASE__URL="${1:-sqlite://$work/tollgate.db}"
export TOLLGATE__DATABASE__AUTO_MIGRATE=true
export TOLLGATE__MAIL__OUTBOX_DIR="$work/outbox"
export TOLLGATE__AUTH__JWT_SECRET="sdk-test-jwt-secret-0123456789abcdef0123"
export TOLLGATE__AUTH__ADMIN_API_KEY="sdk-test-admin-key-0123456789"
export TOLLGATE__LOG__LEVEL=warn
unset OPENAI_API_KEY ANTHROPIC_API_KEY GEMINI_API_KEY

"$bin" serve > "$work/server.log" 2>&1 &
server=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 50); do curl -sf "$base/health" >/dev/null && break; sleep 0.2; done
curl -sf "$base/health" >/dev/null || { echo "the server did not start:"; cat "$work/server.log"; exit 1; }

email="sdk-$(date +%s%N)@example.com"
session=$(curl -sf -X POST "$base/v1/auth/signup" -H 'content-type: application/json' \
    -d "{\"email\":\"$email\",\"password\":\"correct horse battery\"}")
token=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["tokens"]["access_token"])' "$session")
account=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["account"]["id"])' "$session")
key=$(curl -sf -X POST "$base/v1/api-keys" -H "authorization: Bearer $token" \
    -H 'content-type: application/json' -d '{"name":"sdk test"}')
api_key=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["key"])' "$key")

status=0
BASE="$base" API_KEY="$api_key" ADMIN_KEY="$TOLLGATE__AUTH__ADMIN_API_KEY" ACCOUNT="$account" \
    python3 tests/sdk/gateway.py || status=1
BASE="$base" ADMIN_KEY="$TOLLGATE__AUTH__ADMIN_API_KEY" python3 tests/sdk/metrics.py || status=1

kill "$server"; wait "$server" 2>/dev/null || true
"$bin" ledger verify || status=1
[ "$status" -eq 0 ] || { echo "--- server log"; tail -50 "$work/server.log"; }
exit "$status"
