DROP TABLE task_deliveries;
DROP TABLE task_events;
DROP TABLE tasks;
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
