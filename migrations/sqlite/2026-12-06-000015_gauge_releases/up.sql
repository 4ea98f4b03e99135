-- A gauge meter (seats, storage) records releases as negative amounts; zero is still refused.
-- SQLite cannot change a CHECK in place: the table is rebuilt (nothing references it).
CREATE TABLE quota_events_new (
    account_id    TEXT NOT NULL REFERENCES accounts (id),
    key           TEXT NOT NULL,
    meter         TEXT NOT NULL,
    amount        BIGINT NOT NULL CHECK (amount <> 0),
    window_start  BIGINT NOT NULL,
    used_after    BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (account_id, key)
);
INSERT INTO quota_events_new SELECT account_id, key, meter, amount, window_start, used_after, created_at FROM quota_events;
DROP TABLE quota_events;
ALTER TABLE quota_events_new RENAME TO quota_events;
CREATE INDEX quota_events_created ON quota_events (created_at);
