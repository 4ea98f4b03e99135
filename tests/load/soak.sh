#!/usr/bin/env bash
# Memory over a long mixed load against the release binary: spends on 200 accounts (12
# connections), entitlement checks (12) and usage batches of 50 events (8) at once, for
# MINUTES, sampling the server's RSS every 10 seconds. Prints the samples, then whether RSS
# stayed flat after the first minute (the last sample within 10% of the one at one minute),
# then checks that every event was counted once and runs `ledger verify`. A benchmark, not
# a test.
#
#   tests/load/soak.sh [postgres|sqlite] [minutes]
#
# Needs wrk (Debian's package) and target/release/tollgate.
set -euo pipefail
cd "$(dirname "$0")/../.."
backend=${1:-postgres}
minutes=${2:-10}
source tests/load/common.sh
start_server soakbench \
    's/quotas.chat_messages = { limit = 50, period = "day" }/quotas.chat_messages = { period = "day" }/'
sign_up 200 "$work/tokens" 1000000000000
seconds=$((minutes * 60))
echo "after sign-ups: $(rss_mb) MB"
TOKENS="$work/tokens" RUN=soak wrk -t1 -c12 -d"${seconds}s" -s tests/load/spend.lua "$base" > "$work/spend.txt" &
spend=$!
TOKENS="$work/tokens" wrk -t1 -c12 -d"${seconds}s" -s tests/load/check.lua "$base" > "$work/check.txt" &
check=$!
TOKENS="$work/tokens" RUN=soak MODE=batch BATCH=50 wrk -t1 -c8 -d"${seconds}s" -s tests/load/ingest.lua "$base" > "$work/ingest.txt" &
ingest=$!
samples=()
for _ in $(seq 1 $((seconds / 10))); do
    sleep 10
    samples+=("$(rss_mb)")
done
wait "$spend" "$check" "$ingest"
echo "RSS every 10 s (MB): ${samples[*]}"
for load in spend check ingest; do
    printf '%-7s %s\n' "$load" "$(grep -E 'Requests/sec|Non-2xx' "$work/$load.txt" | tr -s ' ' | tr '\n' ' ')"
done
at_one_minute=${samples[5]}
last=${samples[-1]}
peak=$(printf '%s\n' "${samples[@]}" | sort -n | tail -n1)
echo "at one minute: $at_one_minute MB, peak: $peak MB, last: $last MB"
if [ $((last * 10)) -le $((at_one_minute * 11)) ]; then echo "flat"; else echo "GREW"; fi
kill "$server"; wait "$server" 2>/dev/null || true
counted_once
"$bin" ledger verify
