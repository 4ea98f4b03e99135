-- Idempotency records are kept for retention.idempotency_days and then pruned by age.
CREATE INDEX ledger_idempotency_created ON ledger_idempotency (created_at);
CREATE INDEX api_idempotency_created ON api_idempotency (created_at);
CREATE INDEX quota_events_created ON quota_events (created_at);
