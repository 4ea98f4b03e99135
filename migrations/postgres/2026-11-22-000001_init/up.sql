-- Tollgate's schema (PostgreSQL). Conventions: ids are prefixed ULID text; credits are
-- BIGINT; money is BIGINT minor units with a currency; timestamps are BIGINT microseconds
-- since the Unix epoch, UTC; JSON is TEXT.

CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    plan        TEXT NOT NULL,
    debt        BIGINT NOT NULL DEFAULT 0 CHECK (debt >= 0),
    created_at  BIGINT NOT NULL
);
CREATE INDEX accounts_plan ON accounts (plan, id);

CREATE TABLE users (
    id                TEXT PRIMARY KEY,
    account_id        TEXT NOT NULL REFERENCES accounts (id),
    email             TEXT NOT NULL UNIQUE CHECK (email = lower(email)),
    name              TEXT,
    role              TEXT NOT NULL CHECK (role IN ('user', 'admin')),
    email_verified    BOOLEAN NOT NULL DEFAULT FALSE,
    password_hash     TEXT,
    external_subject  TEXT UNIQUE,
    created_at        BIGINT NOT NULL
);
CREATE INDEX users_account ON users (account_id);

CREATE TABLE grants (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts (id),
    source        TEXT NOT NULL,
    amount        BIGINT NOT NULL CHECK (amount > 0),
    remaining     BIGINT NOT NULL CHECK (remaining >= 0 AND remaining <= amount),
    priority      INTEGER NOT NULL,
    expires_at    BIGINT,
    rollover_cap  BIGINT NOT NULL DEFAULT 0 CHECK (rollover_cap >= 0),
    reference     TEXT,
    created_at    BIGINT NOT NULL
);
CREATE INDEX grants_account ON grants (account_id);
CREATE INDEX grants_live ON grants (account_id) WHERE remaining > 0;
-- One allowance grant per account and period, whatever path granted it.
CREATE UNIQUE INDEX grants_one_period_allowance ON grants (account_id, reference)
    WHERE source = 'period_allowance';

CREATE TABLE holds (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts (id),
    amount       BIGINT NOT NULL CHECK (amount > 0),
    captured     BIGINT NOT NULL DEFAULT 0 CHECK (captured >= 0 AND captured <= amount),
    status       TEXT NOT NULL CHECK (status IN ('pending', 'captured', 'voided', 'expired')),
    allocations  TEXT NOT NULL,
    reference    TEXT,
    expires_at   BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    resolved_at  BIGINT,
    CHECK ((status = 'pending') = (resolved_at IS NULL))
);
CREATE INDEX holds_account_status ON holds (account_id, status);
CREATE INDEX holds_pending_expiry ON holds (expires_at) WHERE status = 'pending';

CREATE TABLE ledger_transactions (
    id                 TEXT PRIMARY KEY,
    account_id         TEXT NOT NULL REFERENCES accounts (id),
    kind               TEXT NOT NULL,
    amount             BIGINT NOT NULL CHECK (amount >= 0),
    delta              BIGINT NOT NULL,
    hold_id            TEXT REFERENCES holds (id),
    grant_id           TEXT REFERENCES grants (id),
    refund_of          TEXT REFERENCES ledger_transactions (id),
    refunded           BIGINT NOT NULL DEFAULT 0 CHECK (refunded >= 0 AND refunded <= amount),
    refund_expires_at  BIGINT,
    reference          TEXT,
    memo               TEXT,
    created_at         BIGINT NOT NULL
);
CREATE INDEX ledger_transactions_account ON ledger_transactions (account_id, id);
CREATE INDEX ledger_transactions_hold ON ledger_transactions (hold_id) WHERE hold_id IS NOT NULL;

CREATE TABLE ledger_legs (
    txn_id      TEXT NOT NULL REFERENCES ledger_transactions (id),
    position    INTEGER NOT NULL,
    account_id  TEXT NOT NULL REFERENCES accounts (id),
    grant_id    TEXT REFERENCES grants (id),
    delta       BIGINT NOT NULL,
    PRIMARY KEY (txn_id, position)
);
CREATE INDEX ledger_legs_account ON ledger_legs (account_id);
CREATE INDEX ledger_legs_grant ON ledger_legs (grant_id);

-- What each idempotency key was used for and what it came to (refusals included).
CREATE TABLE ledger_idempotency (
    account_id   TEXT NOT NULL REFERENCES accounts (id),
    key          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (account_id, key)
);

CREATE TABLE quota_usage (
    account_id    TEXT NOT NULL REFERENCES accounts (id),
    meter         TEXT NOT NULL,
    window_start  BIGINT NOT NULL,
    window_end    BIGINT NOT NULL,
    used          BIGINT NOT NULL CHECK (used >= 0),
    PRIMARY KEY (account_id, meter, window_start)
);

CREATE TABLE quota_events (
    account_id    TEXT NOT NULL REFERENCES accounts (id),
    key           TEXT NOT NULL,
    meter         TEXT NOT NULL,
    amount        BIGINT NOT NULL CHECK (amount > 0),
    window_start  BIGINT NOT NULL,
    used_after    BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (account_id, key)
);

CREATE TABLE subscriptions (
    id                    TEXT PRIMARY KEY,
    account_id            TEXT NOT NULL REFERENCES accounts (id),
    plan                  TEXT NOT NULL,
    billing_interval      TEXT NOT NULL CHECK (billing_interval IN ('month', 'year')),
    status                TEXT NOT NULL,
    period_start          BIGINT,
    period_end            BIGINT,
    trial_end             BIGINT,
    cancel_at_period_end  BOOLEAN NOT NULL DEFAULT FALSE,
    pending_plan          TEXT,
    external_id           TEXT UNIQUE,
    created_at            BIGINT NOT NULL,
    canceled_at           BIGINT
);
-- At most one live subscription per account.
CREATE UNIQUE INDEX subscriptions_one_live ON subscriptions (account_id) WHERE status <> 'canceled';

CREATE TABLE api_idempotency (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    status       INTEGER,
    body         TEXT,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE TABLE webhook_events (
    id           TEXT PRIMARY KEY,
    external_id  TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('received', 'processed', 'failed', 'ignored')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    received_at  BIGINT NOT NULL
);
CREATE INDEX webhook_events_status ON webhook_events (status, id);

CREATE TABLE tasks (
    id               TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL REFERENCES accounts (id),
    kind             TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('queued', 'processing', 'done', 'failed', 'canceled')),
    input            TEXT NOT NULL,
    output           TEXT,
    error            TEXT,
    hold_id          TEXT REFERENCES holds (id),
    credits_charged  BIGINT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX tasks_account ON tasks (account_id, id);
CREATE INDEX tasks_queued ON tasks (status, id) WHERE status = 'queued';

CREATE TABLE audit_log (
    id          TEXT PRIMARY KEY,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    request_id  TEXT,
    details     TEXT NOT NULL,
    at          BIGINT NOT NULL
);
CREATE INDEX audit_log_target ON audit_log (target, id);
