#!/usr/bin/env bash
# Webhook intake (verify, store once, answer 200) against the release binary on PostgreSQL,
# beside pgbench inserting one row per transaction into the same PostgreSQL, in one run.
# A benchmark, not a test.
#
#   tests/load/webhook_intake.sh [postgres://…/db] [seconds] [connections]
#
# Needs wrk and pgbench (Debian's packages) and target/release/tollgate. Every request is a
# new event, signed a moment before the run (the 300 s tolerance covers it); the apply
# worker runs as in production (the events are of a kind it marks ignored).
set -euo pipefail
cd "$(dirname "$0")/../.."
admin=${1:-postgres://postgres@127.0.0.1:5432/test}
seconds=${2:-20}
connections=${3:-32}
secret="whsec_bench_0123456789abcdefghijklmnop"
work=$(mktemp -d)
schema="bench_$$"
PGOPTIONS="-c client_min_messages=warning" psql "$admin" -qc "CREATE SCHEMA $schema"
cleanup() {
    kill "${server:-0}" 2>/dev/null || true
    PGOPTIONS="-c client_min_messages=warning" psql "$admin" -qc "DROP SCHEMA $schema CASCADE" || true
    rm -rf "$work"
}
trap cleanup EXIT

python3 - "$work/requests.tsv" "$secret" 200000 <<'PY'
import hashlib, hmac, json, sys, time
path, secret, count = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
now = int(time.time())
with open(path, "w") as out:
    for i in range(count):
        body = json.dumps({"id": f"evt_bench_{i}", "object": "event", "type": "customer.created",
                           "data": {"object": {"id": f"cus_{i}", "object": "customer"}}},
                          separators=(",", ":"))
        sig = hmac.new(secret, f"{now}.{body}".encode(), hashlib.sha256).hexdigest()
        out.write(f"t={now},v1={sig}\t{body}\n")
PY
cat > "$work/intake.lua" <<'LUA'
local counter = 0
function setup(thread)
    thread:set("offset", counter * 100000)
    counter = counter + 1
end
local lines = {}
local i = 0
function init(args)
    for line in io.lines(args[1]) do lines[#lines + 1] = line end
    i = offset
end
function request()
    i = i + 1
    local line = lines[(i % #lines) + 1]
    local tab = line:find("\t")
    return wrk.format("POST", "/v1/webhooks/stripe",
        {["Content-Type"] = "application/json", ["Stripe-Signature"] = line:sub(1, tab - 1)},
        line:sub(tab + 1))
end
LUA

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
TOLLGATE_CONFIG_DIR="$PWD/config" TOLLGATE_ENV=production \
TOLLGATE__SERVER__PORT="$port" \
TOLLGATE__DATABASE__URL="$admin?options=-csearch_path%3D$schema" \
TOLLGATE__DATABASE__AUTO_MIGRATE=true \
TOLLGATE__AUTH__JWT_SECRET="bench-jwt-secret-0123456789abcdef0123" \
TOLLGATE__PAYMENTS__STRIPE_WEBHOOK_SECRET="$secret" \
TOLLGATE__MAIL__OUTBOX_DIR="$work/outbox" TOLLGATE__LOG__LEVEL=warn \
    target/release/tollgate serve > "$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.2; done

echo "== tollgate: POST /v1/webhooks/stripe, $connections connections, ${seconds}s"
wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "$work/intake.lua" \
    "http://127.0.0.1:$port" -- "$work/requests.tsv" | grep -E "Requests/sec|Latency|50%|99%|Non-2xx"
stored=$(psql "$admin" -tAc "SELECT count(*) FROM $schema.webhook_events")
echo "events stored: $stored"

echo "== reference: pgbench, one INSERT … ON CONFLICT DO NOTHING per transaction, $connections clients"
psql "$admin" -qc "CREATE TABLE $schema.bench_events (id TEXT PRIMARY KEY, payload TEXT NOT NULL)"
cat > "$work/insert.sql" <<SQL
\set n random(1, 1000000000)
INSERT INTO $schema.bench_events VALUES ('evt_' || :n, '{"type":"customer.created"}') ON CONFLICT DO NOTHING;
SQL
pgbench -n -c"$connections" -j2 -T"$seconds" -f "$work/insert.sql" "$admin" 2>/dev/null | grep -E "^tps|latency average"
