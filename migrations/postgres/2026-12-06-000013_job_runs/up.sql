-- Scheduled jobs (hold expiry, allowances, payment events, task sweeps, pruning) run once
-- per period across every instance on one database: an instance runs a job's period only
-- if its insert of that (job, period) is the one that lands. The rows are also the jobs'
-- recent history, which the admin can read; they are pruned with the idempotency records.
CREATE TABLE job_runs (
    job         TEXT NOT NULL,
    period      BIGINT NOT NULL,   -- unix milliseconds at which the period began
    instance    TEXT NOT NULL,     -- the instance that ran it
    started_at  BIGINT NOT NULL,
    PRIMARY KEY (job, period)
);
