-- A gauge meter (seats, storage) records releases as negative amounts; zero is still refused.
ALTER TABLE quota_events DROP CONSTRAINT quota_events_amount_check;
ALTER TABLE quota_events ADD CONSTRAINT quota_events_amount_check CHECK (amount <> 0);
