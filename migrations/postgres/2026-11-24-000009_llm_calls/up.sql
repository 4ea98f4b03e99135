-- Every metered LLM call: who, which model and provider, the tokens the provider reported
-- (output includes reasoning), the cost at the catalog's prices in micro-units of the
-- currency (rounded up), the credits charged, how long it took and how it ended.
CREATE TABLE llm_calls (
    id                   TEXT PRIMARY KEY,
    account_id           TEXT NOT NULL REFERENCES accounts (id),
    api_key              TEXT,
    model                TEXT NOT NULL,
    provider             TEXT NOT NULL,
    input_tokens         BIGINT NOT NULL CHECK (input_tokens >= 0),
    cached_input_tokens  BIGINT NOT NULL CHECK (cached_input_tokens >= 0),
    output_tokens        BIGINT NOT NULL CHECK (output_tokens >= 0),
    reasoning_tokens     BIGINT NOT NULL CHECK (reasoning_tokens >= 0),
    cost_micros          BIGINT NOT NULL CHECK (cost_micros >= 0),
    currency             TEXT NOT NULL,
    credits              BIGINT NOT NULL CHECK (credits >= 0),
    latency_ms           BIGINT NOT NULL CHECK (latency_ms >= 0),
    outcome              TEXT NOT NULL CHECK (outcome IN ('ok', 'error', 'disconnected')),
    created_at           BIGINT NOT NULL
);
CREATE INDEX llm_calls_account ON llm_calls (account_id, created_at);
