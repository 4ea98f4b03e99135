#!/usr/bin/env bash
# Debits over HTTP beside pgbench on the same PostgreSQL, in one run: for each round,
# pgbench TPC-B (scale 32), then `POST /v1/credits/spend` over 200 accounts, then pgbench's
# hot-row update (one row), then spends on one hot account; every request with its own
# Idempotency-Key, 32 connections each. Ends with the server's RSS and `ledger verify`.
# A benchmark, not a test.
#
#   tests/load/spend.sh [postgres|sqlite] [seconds per step] [rounds]
#
# Needs wrk (Debian's package) and pgbench on PATH, and target/release/tollgate.
set -euo pipefail
cd "$(dirname "$0")/../.."
backend=${1:-postgres}
seconds=${2:-10}
rounds=${3:-3}
admin=${TOLLGATE_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}
bin=target/release/tollgate
work=$(mktemp -d)
schema="spendbench_$$"
quiet=(env PGOPTIONS="-c client_min_messages=warning")
cleanup() {
    kill "${server:-0}" 2>/dev/null || true
    [ "$backend" = postgres ] && "${quiet[@]}" psql "$admin" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# pgbench's tables live in a database of their own, made once.
bench_db="${admin%/*}/tollgate_pgbench"
if ! psql "$bench_db" -qtAc "SELECT 1 FROM pgbench_accounts LIMIT 1" >/dev/null 2>&1; then
    psql "$admin" -qc "CREATE DATABASE tollgate_pgbench" >/dev/null 2>&1 || true
    pgbench -i -q -s 32 "$bench_db" >/dev/null 2>&1
fi
printf '\\set aid 1\nUPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\n' > "$work/hot.sql"

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
export TOLLGATE__AUTH__ADMIN_API_KEY="bench-admin-key-0123456789abcdef"
export TOLLGATE__AUTH__JWT_SECRET="bench-jwt-secret-0123456789abcdef0123456"
export TOLLGATE__AUTH__ACCESS_TOKEN_TTL_SECONDS=7200
export TOLLGATE__LOG__LEVEL=warn
"$bin" serve > "$work/server.log" 2>&1 &
server=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do curl -sf "$base/health" >/dev/null && break; sleep 0.2; done

# 200 accounts, each with a billion credits.
python3 - "$base" "$TOLLGATE__AUTH__ADMIN_API_KEY" "$work/tokens" <<'PY'
import json, sys, urllib.request
from concurrent.futures import ThreadPoolExecutor
base, admin, out = sys.argv[1:4]
def post(path, body, token):
    req = urllib.request.Request(base + path, json.dumps(body).encode(), method="POST",
        headers={"content-type": "application/json", "authorization": f"Bearer {token}"})
    return json.load(urllib.request.urlopen(req))
def one(i):
    session = post("/v1/auth/signup", {"email": f"spend{i}@bench.test", "password": "correct horse battery"}, "")
    post(f"/v1/admin/accounts/{session['account']['id']}/credits", {"delta": 1000000000, "reason": "benchmark"}, admin)
    return session["tokens"]["access_token"]
with ThreadPoolExecutor(8) as pool:
    tokens = list(pool.map(one, range(200)))
open(out, "w").write("\n".join(tokens) + "\n")
PY
head -n1 "$work/tokens" > "$work/hot_token"

cat > "$work/spend.lua" <<'LUA'
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
end
function response(status, headers, body)
    if status ~= 200 and not shown then
        shown = true
        io.stderr:write("first non-200: " .. status .. " " .. body .. "\n")
    end
end
function request()
    count = count + 1
    return wrk.format("POST", "/v1/credits/spend", {
        ["authorization"] = "Bearer " .. tokens[math.random(#tokens)],
        ["content-type"] = "application/json",
        ["idempotency-key"] = prefix .. count,
    }, '{"action":"short_chat"}')
end
LUA

tps() { sed -n 's/^tps = \([0-9.]*\) .*/\1/p' | head -n1; }
wrk_line() { # tokens-file run-id
    TOKENS=$1 RUN=$2 wrk -t2 -c32 -d"${seconds}s" --latency -s "$work/spend.lua" "$base" > "$work/wrk.txt"
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

printf '%-6s %10s %28s %8s %10s %28s %8s\n' round "TPC-B tps" "spend 200: req/s p50 p99 bad" ratio "hot tps" "spend hot: req/s p50 p99 bad" ratio
for round in $(seq 1 "$rounds"); do
    tpcb=$(pgbench -n -c 32 -j 2 -T "$seconds" "$bench_db" 2>/dev/null | tps)
    read -r rps p50 p99 bad < <(wrk_line "$work/tokens" "r$round-many")
    hot=$(pgbench -n -c 32 -j 2 -T "$seconds" -f "$work/hot.sql" "$bench_db" 2>/dev/null | tps)
    read -r hrps hp50 hp99 hbad < <(wrk_line "$work/hot_token" "r$round-hot")
    printf '%-6s %10.0f %10s %7s %7s %3s %8s %10.0f %10s %7s %7s %3s %8s\n' "$round" "$tpcb" \
        "$rps" "$p50" "$p99" "$bad" "$(python3 -c "print(f'{$rps/$tpcb:.2f}x')")" "$hot" \
        "$hrps" "$hp50" "$hp99" "$hbad" "$(python3 -c "print(f'{$hrps/$hot:.2f}x')")"
done
echo "server RSS after the runs: $(( $(awk '/VmRSS/ {print $2}' "/proc/$server/status") / 1024 )) MB"
kill "$server"; wait "$server" 2>/dev/null || true
"$bin" ledger verify
