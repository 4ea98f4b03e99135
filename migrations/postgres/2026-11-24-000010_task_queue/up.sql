-- The task queue: the first tasks table was never written to (no route created tasks), so
-- it is replaced by one with the queue's columns: the claim count and its limit, the
-- lease, the deadline. Who claimed it and when are in its history (task_events); its
-- idempotency is its hold's (one task per hold, one hold per ledger key).
DROP TABLE tasks;
CREATE TABLE tasks (
    id               TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL REFERENCES accounts (id),
    kind             TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'canceled')),
    input            TEXT NOT NULL,
    output           TEXT,
    error            TEXT,
    hold_id          TEXT REFERENCES holds (id),
    reserved         BIGINT NOT NULL CHECK (reserved >= 0),
    credits_charged  BIGINT CHECK (credits_charged >= 0 AND credits_charged <= reserved),
    attempts         INTEGER NOT NULL CHECK (attempts >= 0),
    max_attempts     INTEGER NOT NULL CHECK (max_attempts >= 1),
    lease_until      BIGINT,
    deadline         BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    finished_at      BIGINT,
    CHECK ((status = 'running') = (lease_until IS NOT NULL))
);
CREATE INDEX tasks_account ON tasks (account_id, id);
CREATE UNIQUE INDEX tasks_hold ON tasks (hold_id);
-- What a claim scans: the oldest queued tasks of some types.
CREATE INDEX tasks_queue ON tasks (kind, id) WHERE status = 'queued';
-- What the sweeper scans: leases that may have run out, deadlines that may have passed.
CREATE INDEX tasks_leases ON tasks (lease_until) WHERE status = 'running';
CREATE INDEX tasks_deadlines ON tasks (deadline) WHERE status IN ('queued', 'running');

-- Every move of a task, in order: its history.
CREATE TABLE task_events (
    task_id  TEXT NOT NULL REFERENCES tasks (id),
    seq      INTEGER NOT NULL,
    at       BIGINT NOT NULL,
    status   TEXT NOT NULL,
    attempt  INTEGER NOT NULL,
    actor    TEXT NOT NULL,
    note     TEXT,
    PRIMARY KEY (task_id, seq)
);

-- Webhooks announcing finished tasks: written with the task's final move (an outbox),
-- sent and retried by the delivery worker.
CREATE TABLE task_deliveries (
    id               TEXT PRIMARY KEY,
    task_id          TEXT NOT NULL REFERENCES tasks (id),
    event            TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    last_status      INTEGER,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    delivered_at     BIGINT
);
CREATE INDEX task_deliveries_due ON task_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX task_deliveries_task ON task_deliveries (task_id, id);
