#!/usr/bin/env bash
# Schemathesis (`--checks all`) against a running tollgate, on SQLite or PostgreSQL.
#
#   tests/schemathesis/run.sh [DATABASE_URL]     # default: a fresh SQLite file
#
# Starts target/debug/tollgate (TOLLGATE_BIN overrides) on a free port with the default
# catalog but no rate limits (they would answer 429 to most generated requests, leaving the
# logic behind them untested), signs a user up, gives them credits, runs schemathesis once
# as that user (every route but the admin ones, and the OpenAI- and Anthropic-compatible
# ones, which answer in those APIs' shapes and are tested with their official SDKs) and
# once with the admin key (the admin
# routes), then proves the ledger with `tollgate ledger verify`. Exits non-zero on any
# failure. The repository's schemathesis.toml says which business refusals are expected.
# Set ST_MAX_EXAMPLES to change the examples per operation (default 30).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
bin=${TOLLGATE_BIN:-$root/target/debug/tollgate}
work=$(mktemp -d)
trap 'kill "${server:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The default catalog without the plans' rate limits.
sed '/^rate_limit = /d' config/default.toml > "$work/catalog.toml"
export TOLLGATE_CONFIG_DIR="$root/config"
export TOLLGATE_CONFIG="$work/catalog.toml"
export TOLLGATE__SERVER__PORT="$port"
export TOLLGATE__DATABASE__URL="${1:-sqlite://$work/tollgate.db}"
export TOLLGATE__DATABASE__AUTO_MIGRATE=true
export TOLLGATE__HTTP__ANONYMOUS_RATE_LIMIT__REQUESTS=1000000
export TOLLGATE__HTTP__USER_RATE_LIMIT__REQUESTS=1000000
export TOLLGATE__MAIL__OUTBOX_DIR="$work/outbox"
export TOLLGATE__AUTH__JWT_SECRET="schemathesis-jwt-secret-0123456789abcdef"
export TOLLGATE__AUTH__ADMIN_API_KEY="schemathesis-admin-key-0123456789"
export TOLLGATE__AUTH__ACCESS_TOKEN_TTL_SECONDS=3600
# A webhook secret, so that the webhook route is exercised (generated signatures fail: 401).
export TOLLGATE__PAYMENTS__STRIPE_WEBHOOK_SECRET="whsec_schemathesis_0123456789abcdef"
export TOLLGATE__LOG__LEVEL=warn

"$bin" serve > "$work/server.log" 2>&1 &
server=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 50); do curl -sf "$base/health" >/dev/null && break; sleep 0.2; done
curl -sf "$base/health" >/dev/null || { echo "the server did not start:"; cat "$work/server.log"; exit 1; }

session=$(curl -sf -X POST "$base/v1/auth/signup" -H 'content-type: application/json' \
    -d '{"email":"schemathesis@example.com","password":"correct horse battery"}')
token=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["tokens"]["access_token"])' "$session")
account=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["account"]["id"])' "$session")
curl -sf -X POST "$base/v1/admin/accounts/$account/credits" \
    -H "authorization: Bearer $TOLLGATE__AUTH__ADMIN_API_KEY" -H 'content-type: application/json' \
    -d '{"delta":1000000,"reason":"schemathesis run"}' >/dev/null

examples=${ST_MAX_EXAMPLES:-30}
st=(python3 -m schemathesis.cli)
status=0
"${st[@]}" run "$base/openapi.json" --checks all --max-examples "$examples" --seed 1 \
    --exclude-tag admin --exclude-tag compat -H "Authorization: Bearer $token" || status=1
"${st[@]}" run "$base/openapi.json" --checks all --max-examples "$examples" --seed 1 \
    --include-tag admin -H "Authorization: Bearer $TOLLGATE__AUTH__ADMIN_API_KEY" || status=1

kill "$server"; wait "$server" 2>/dev/null || true
if grep -E '"level":"ERROR"|panicked' "$work/server.log"; then
    echo "the server logged errors"; status=1
fi
"$bin" ledger verify || status=1
exit $status
