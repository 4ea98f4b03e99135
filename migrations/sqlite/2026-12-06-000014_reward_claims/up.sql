-- Claims of the catalog's rewards. `seq` is a claim's place among its account's claims of
-- that reward: unique, so two claims racing for one place cannot both be made.
CREATE TABLE reward_claims (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts (id),
    user_id     TEXT NOT NULL REFERENCES users (id),
    reward      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'granted', 'rejected')),
    credits     BIGINT NOT NULL CHECK (credits > 0),
    evidence    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    decided_at  BIGINT,
    decided_by  TEXT
);
CREATE UNIQUE INDEX reward_claims_place ON reward_claims (account_id, reward, seq);
CREATE INDEX reward_claims_status ON reward_claims (status, id);
