#!/usr/bin/env bash
# The task queue on PostgreSQL: tasks created (each with its hold), then claimed and
# completed (each a capture) by 1, 2 and 4 workers, through the server's own use cases and
# store (crates/app/examples/task_queue_bench.rs); beside it in the same run, pgbench
# driving the smallest SKIP LOCKED queue the database allows (a claim UPDATE … RETURNING,
# then a completion UPDATE, two transactions per task) with as many clients.
# A benchmark, not a test.
#
#   tests/load/tasks.sh [postgres://…/db] [tasks per step] [accounts]
set -euo pipefail
cd "$(dirname "$0")/../.."
admin=${1:-postgres://postgres@127.0.0.1:5432/test}
tasks=${2:-2000}
accounts=${3:-50}
cargo build -q --release -p app --example task_queue_bench
echo "== tollgate: $tasks tasks per step over $accounts accounts"
target/release/examples/task_queue_bench "$admin" "$tasks" "$accounts"

schema="qbench_$$"
work=$(mktemp -d)
trap 'psql "$admin" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null; rm -rf "$work"' EXIT
export PGOPTIONS="-c client_min_messages=warning"
psql "$admin" -qc "CREATE SCHEMA $schema"
cat > "$work/task.sql" <<SQL
UPDATE $schema.q SET status = 'running' WHERE id = (SELECT id FROM $schema.q WHERE status = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id \gset
UPDATE $schema.q SET status = 'done' WHERE id = :id;
SQL
echo
echo "== reference: pgbench, claim (UPDATE … SKIP LOCKED RETURNING) + complete (UPDATE) per task"
echo "| clients | tasks | claimed+completed/s | latency avg ms (both statements) |"
echo "|---|---|---|---|"
for clients in 1 2 4; do
    psql "$admin" -qc "DROP TABLE IF EXISTS $schema.q; CREATE TABLE $schema.q (id BIGSERIAL PRIMARY KEY, status TEXT NOT NULL); CREATE INDEX ON $schema.q (id) WHERE status = 'queued'; INSERT INTO $schema.q (status) SELECT 'queued' FROM generate_series(1, $((tasks + 100)));"
    out=$(pgbench -n -c"$clients" -j"$clients" -t$((tasks / clients)) -f "$work/task.sql" "$admin" 2>/dev/null)
    tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    lat=$(echo "$out" | sed -n 's/^latency average = \([0-9.]*\) ms/\1/p')
    echo "| $clients | $tasks | ${tps%.*} | $lat |"
done
