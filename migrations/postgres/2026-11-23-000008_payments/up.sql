-- Payments received (packs and subscription invoices) and what became of the credits they
-- bought: `withheld` is what refunds or a dispute took back so far. `external_id` is the
-- provider's id of what was paid (`cs_…`, `pi_…`, `in_…`): one record per payment.
CREATE TABLE payments (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts (id),
    kind            TEXT NOT NULL CHECK (kind IN ('pack', 'invoice')),
    external_id     TEXT NOT NULL UNIQUE,
    payment_intent  TEXT,
    item            TEXT NOT NULL,
    amount_minor    BIGINT NOT NULL CHECK (amount_minor >= 0),
    currency        TEXT NOT NULL,
    credits         BIGINT NOT NULL CHECK (credits >= 0),
    withheld        BIGINT NOT NULL DEFAULT 0 CHECK (withheld >= 0 AND withheld <= credits),
    expires_at      BIGINT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX payments_account ON payments (account_id, id);
CREATE INDEX payments_intent ON payments (payment_intent);

-- What the provider reported about each charge: refunds (cumulative) and the dispute.
-- Kept even before the payment it belongs to is known, so that order does not matter.
CREATE TABLE payment_charges (
    charge               TEXT PRIMARY KEY,
    payment_intent       TEXT,
    amount_minor         BIGINT NOT NULL,
    refunded_minor       BIGINT NOT NULL,
    dispute              TEXT CHECK (dispute IN ('open', 'won', 'lost')),
    dispute_observed_at  BIGINT
);
CREATE INDEX payment_charges_intent ON payment_charges (payment_intent);

-- Which provider customer is which account.
CREATE TABLE payment_customers (
    provider     TEXT NOT NULL,
    customer     TEXT NOT NULL,
    account_id   TEXT NOT NULL REFERENCES accounts (id),
    PRIMARY KEY (provider, customer)
);
CREATE UNIQUE INDEX payment_customers_account ON payment_customers (provider, account_id);

-- The newest provider state applied to a subscription (events may arrive out of order),
-- and since when a renewal has gone unpaid (the dunning grace counts from there).
ALTER TABLE subscriptions ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE subscriptions ADD COLUMN past_due_since BIGINT;
CREATE INDEX subscriptions_past_due ON subscriptions (past_due_since) WHERE status = 'past_due';
