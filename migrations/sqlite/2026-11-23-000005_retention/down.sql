DROP INDEX quota_events_created;
DROP INDEX api_idempotency_created;
DROP INDEX ledger_idempotency_created;
