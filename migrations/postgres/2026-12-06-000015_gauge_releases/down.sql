DELETE FROM quota_events WHERE amount < 0;
ALTER TABLE quota_events DROP CONSTRAINT quota_events_amount_check;
ALTER TABLE quota_events ADD CONSTRAINT quota_events_amount_check CHECK (amount > 0);
