DROP INDEX grants_one_purchase;
DROP INDEX webhook_events_due;
ALTER TABLE webhook_events DROP COLUMN next_attempt_at;
