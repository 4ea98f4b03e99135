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
source tests/load/common.sh
bench_db=$(pgbench_db)
start_server spendbench
printf '\\set aid 1\nUPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\n' > "$work/hot.sql"
# 200 accounts, each with a billion credits.
sign_up 200 "$work/tokens" 1000000000
head -n1 "$work/tokens" > "$work/hot_token"


wrk_line() { # tokens-file run-id
    TOKENS=$1 RUN=$2 wrk -t2 -c32 -d"${seconds}s" --latency -s tests/load/spend.lua "$base" > "$work/wrk.txt"
    wrk_stats "$work/wrk.txt"
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
echo "server RSS after the runs: $(rss_mb) MB"
kill "$server"; wait "$server" 2>/dev/null || true
"$bin" ledger verify
