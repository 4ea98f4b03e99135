# Shared by the HTTP benchmarks: sourced, not run. Each script sets `backend` (postgres or
# sqlite) and calls `start_server`, which makes a work folder and (on PostgreSQL) a fresh
# schema, both removed on exit, and starts target/release/tollgate on a free port with the
# request rate limits off.
#
# TOLLGATE_BENCH_POSTGRES overrides the PostgreSQL URL (default: the machines' `test`).

admin=${TOLLGATE_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}
bin=target/release/tollgate
quiet=(env PGOPTIONS="-c client_min_messages=warning")

cleanup() {
    kill "${server:-0}" 2>/dev/null || true
    if [ "${backend:-}" = postgres ] && [ -n "${schema:-}" ]; then
        "${quiet[@]}" psql "$admin" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" || true
    fi
    [ -n "${work:-}" ] && rm -rf "$work"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# pgbench's tables (scale 32) in a database of their own, made once; prints its URL.
pgbench_db() {
    local db="${admin%/*}/tollgate_pgbench"
    if ! psql "$db" -qtAc "SELECT 1 FROM pgbench_accounts LIMIT 1" >/dev/null 2>&1; then
        psql "$admin" -qc "CREATE DATABASE tollgate_pgbench" >/dev/null 2>&1 || true
        pgbench -i -q -s 32 "$db" >/dev/null 2>&1
    fi
    echo "$db"
}

# start_server NAME [SED-EXPRESSION…]: the default catalog without the plans' rate limits
# (and with each further sed expression applied), on a fresh database; sets work, schema,
# server (its pid) and base (its URL).
start_server() {
    local name=$1
    shift
    work=$(mktemp -d)
    schema="${name}_$$"
    trap cleanup EXIT
    local port
    port=$(free_port)
    local edits=(-e '/^rate_limit = /d')
    for expression in "$@"; do edits+=(-e "$expression"); done
    sed "${edits[@]}" config/default.toml > "$work/catalog.toml"
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
}

# sign_up COUNT FILE [CREDITS]: COUNT new users, their access tokens one a line in FILE;
# each account granted CREDITS by the admin key when given.
sign_up() {
    python3 - "$base" "$TOLLGATE__AUTH__ADMIN_API_KEY" "$1" "$2" "${3:-0}" <<'PY'
import json, sys, urllib.request
from concurrent.futures import ThreadPoolExecutor
base, admin, count, out, credits = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
def post(path, body, token):
    req = urllib.request.Request(base + path, json.dumps(body).encode(), method="POST",
        headers={"content-type": "application/json", "authorization": f"Bearer {token}"})
    return json.load(urllib.request.urlopen(req))
def one(i):
    session = post("/v1/auth/signup", {"email": f"user{i}@bench.test", "password": "correct horse battery"}, "")
    if credits:
        post(f"/v1/admin/accounts/{session['account']['id']}/credits", {"delta": credits, "reason": "benchmark"}, admin)
    return session["tokens"]["access_token"]
with ThreadPoolExecutor(8) as pool:
    tokens = list(pool.map(one, range(count)))
open(out, "w").write("\n".join(tokens) + "\n")
PY
}

# wrk_stats FILE: "req/s p50-ms p99-ms non-2xx" from wrk's --latency output.
wrk_stats() {
    python3 - "$1" <<'PY'
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

# tps: pgbench's tps from its output on stdin.
tps() { sed -n 's/^tps = \([0-9.]*\) .*/\1/p' | head -n1; }

# rss_mb: the server's resident memory now.
rss_mb() { echo $(( $(awk '/VmRSS/ {print $2}' "/proc/$server/status") / 1024 )); }

# counted_once: after a load of 1-unit usage events, fails unless the events stored equal
# the units counted (none counted twice, none lost).
counted_once() {
    local count="SELECT (SELECT count(*) FROM quota_events), (SELECT coalesce(sum(used), 0) FROM quota_usage)"
    local stored used
    if [ "$backend" = postgres ]; then
        read -r stored used < <(psql "$TOLLGATE__DATABASE__URL" -qtA -F ' ' -c "$count")
    else
        read -r stored used < <(sqlite3 -separator ' ' "$work/tollgate.db" "$count")
    fi
    echo "events stored: $stored, units counted: $used"
    [ "$stored" = "$used" ] || { echo "MISMATCH: an event was counted twice or not at all"; return 1; }
}
