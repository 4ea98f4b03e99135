#!/usr/bin/env bash
# Usage ingest over HTTP beside pgbench on the same PostgreSQL, in one run: for each round,
# pgbench TPC-B (scale 32) as the reference, then `POST /v1/quotas/track` with batches of
# events over 200 accounts, then the single-event route `POST /v1/quotas/{meter}/track`;
# every event with its own key, 32 connections each. Ends by checking that every recorded
# event was counted once (events stored = units used) and with `ledger verify`.
# A benchmark, not a test.
#
#   tests/load/ingest.sh [postgres|sqlite] [seconds per step] [rounds] [events per batch]
#
# Needs wrk (Debian's package) and pgbench on PATH, and target/release/tollgate.
set -euo pipefail
cd "$(dirname "$0")/../.."
backend=${1:-postgres}
seconds=${2:-10}
rounds=${3:-3}
batch=${4:-100}
admin=${TOLLGATE_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}
bin=target/release/tollgate
work=$(mktemp -d)
schema="ingestbench_$$"
quiet=(env PGOPTIONS="-c client_min_messages=warning")
cleanup() {
    kill "${server:-0}" 2>/dev/null || true
    [ "$backend" = postgres ] && "${quiet[@]}" psql "$admin" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

bench_db="${admin%/*}/tollgate_pgbench"
if ! psql "$bench_db" -qtAc "SELECT 1 FROM pgbench_accounts LIMIT 1" >/dev/null 2>&1; then
    psql "$admin" -qc "CREATE DATABASE tollgate_pgbench" >/dev/null 2>&1 || true
    pgbench -i -q -s 32 "$bench_db" >/dev/null 2>&1
fi

port=$(free_port)
# Without the plans' request rate limits and the free plan's 50 messages a day, every event
# is recorded: the benchmark measures counting, not refusing.
sed -e '/^rate_limit = /d' -e 's/quotas.chat_messages = { limit = 50, period = "day" }/quotas.chat_messages = { period = "day" }/' \
    config/default.toml > "$work/catalog.toml"
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

python3 - "$base" "$work/tokens" <<'PY'
import json, sys, urllib.request
from concurrent.futures import ThreadPoolExecutor
base, out = sys.argv[1:3]
def one(i):
    req = urllib.request.Request(base + "/v1/auth/signup", json.dumps(
        {"email": f"ingest{i}@bench.test", "password": "correct horse battery"}).encode(),
        method="POST", headers={"content-type": "application/json"})
    return json.load(urllib.request.urlopen(req))["tokens"]["access_token"]
with ThreadPoolExecutor(8) as pool:
    tokens = list(pool.map(one, range(200)))
open(out, "w").write("\n".join(tokens) + "\n")
PY

# MODE=batch: BATCH events per request to /v1/quotas/track; MODE=single: one event per
# request, keyed by Idempotency-Key. A response that is not 200, or a batch with an event
# not recorded, is reported once on stderr.
cat > "$work/ingest.lua" <<'LUA'
local tokens = {}
local count = 0
local threads = 0
function setup(thread)
    threads = threads + 1
    thread:set("tid", threads)
end
function init(args)
    for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
    math.randomseed(tid * 7919 + os.time())
    prefix = os.getenv("RUN") .. "-" .. tid .. "-"
    mode = os.getenv("MODE")
    size = tonumber(os.getenv("BATCH"))
end
function response(status, headers, body)
    local ok = status == 200 and (mode ~= "batch" or body:find('"recorded":' .. size .. ',', 1, true))
    if not ok and not shown then
        shown = true
        io.stderr:write("first bad answer: " .. status .. " " .. body:sub(1, 300) .. "\n")
    end
end
function request()
    count = count + 1
    local headers = {
        ["authorization"] = "Bearer " .. tokens[math.random(#tokens)],
        ["content-type"] = "application/json",
    }
    if mode == "single" then
        headers["idempotency-key"] = prefix .. count
        return wrk.format("POST", "/v1/quotas/chat_messages/track", headers, '{"amount":1}')
    end
    local events = {}
    for i = 1, size do
        events[i] = '{"meter":"chat_messages","key":"' .. prefix .. count .. "-" .. i .. '"}'
    end
    return wrk.format("POST", "/v1/quotas/track", headers,
        '{"events":[' .. table.concat(events, ",") .. ']}')
end
LUA

tps() { sed -n 's/^tps = \([0-9.]*\) .*/\1/p' | head -n1; }
wrk_line() { # mode run-id
    MODE=$1 RUN=$2 BATCH=$batch TOKENS="$work/tokens" \
        wrk -t2 -c32 -d"${seconds}s" --latency -s "$work/ingest.lua" "$base" > "$work/wrk.txt"
    python3 - "$work/wrk.txt" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", text).group(1))
def pct(p):
    m = re.search(rf"^\s+{p}%\s+([0-9.]+)(us|ms|s)", text, re.M)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print(f"{rps:.0f} {pct(50):.2f} {pct(99):.2f} {bad.group(1) if bad else 0}")
PY
}

printf '%-6s %10s %40s %8s %32s\n' round "TPC-B tps" "batches of $batch: req/s events/s p50 p99 bad" ratio "single: events/s p50 p99 bad"
for round in $(seq 1 "$rounds"); do
    tpcb=$(pgbench -n -c 32 -j 2 -T "$seconds" "$bench_db" 2>/dev/null | tps)
    read -r rps p50 p99 bad < <(wrk_line batch "r$round-batch")
    events=$((rps * batch))
    read -r srps sp50 sp99 sbad < <(wrk_line single "r$round-single")
    printf '%-6s %10.0f %8s %10s %7s %7s %4s %8s %12s %7s %7s %4s\n' "$round" "$tpcb" \
        "$rps" "$events" "$p50" "$p99" "$bad" "$(python3 -c "print(f'{$events/$tpcb:.1f}x')")" \
        "$srps" "$sp50" "$sp99" "$sbad"
done
echo "server RSS after the runs: $(( $(awk '/VmRSS/ {print $2}' "/proc/$server/status") / 1024 )) MB"
kill "$server"; wait "$server" 2>/dev/null || true
count="SELECT (SELECT count(*) FROM quota_events), (SELECT coalesce(sum(used), 0) FROM quota_usage)"
if [ "$backend" = postgres ]; then
    read -r stored used < <(psql "$TOLLGATE__DATABASE__URL" -qtA -F ' ' -c "$count")
else
    read -r stored used < <(sqlite3 -separator ' ' "$work/tollgate.db" "$count")
fi
echo "events stored: $stored, units counted: $used"
[ "$stored" = "$used" ] || { echo "MISMATCH: an event was counted twice or not at all"; exit 1; }
"$bin" ledger verify
