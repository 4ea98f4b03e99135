-- A failed webhook event is applied again from this time (backoff); see the apply worker.
ALTER TABLE webhook_events ADD COLUMN next_attempt_at BIGINT;
CREATE INDEX webhook_events_due ON webhook_events (status, next_attempt_at);
-- A purchase grant's reference names the payment that bought it (`payment:<id>`): one
-- grant per payment, ever. (Earlier purchase grants named their pack; they are left alone.)
CREATE UNIQUE INDEX grants_one_purchase ON grants (reference)
    WHERE source = 'purchase' AND reference LIKE 'payment:%';
