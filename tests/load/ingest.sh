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
source tests/load/common.sh
bench_db=$(pgbench_db)
# Without the free plan's 50 messages a day every event is recorded: the benchmark measures
# counting, not refusing.
start_server ingestbench \
    's/quotas.chat_messages = { limit = 50, period = "day" }/quotas.chat_messages = { period = "day" }/'
sign_up 200 "$work/tokens"

wrk_line() { # mode run-id
    MODE=$1 RUN=$2 BATCH=$batch TOKENS="$work/tokens" \
        wrk -t2 -c32 -d"${seconds}s" --latency -s tests/load/ingest.lua "$base" > "$work/wrk.txt"
    wrk_stats "$work/wrk.txt"
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
echo "server RSS after the runs: $(rss_mb) MB"
kill "$server"; wait "$server" 2>/dev/null || true
counted_once
"$bin" ledger verify
