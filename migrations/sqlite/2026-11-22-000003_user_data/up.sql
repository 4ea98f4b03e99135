-- A user's own data, and API keys (stored as SHA-256 hashes only).
CREATE TABLE user_preferences (
    user_id     TEXT PRIMARY KEY REFERENCES users (id),
    data        TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE saved_items (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id),
    kind        TEXT NOT NULL,
    title       TEXT,
    content     TEXT NOT NULL,
    metadata    TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX saved_items_owner ON saved_items (user_id, kind, id);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id),
    name        TEXT NOT NULL,
    prefix      TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX api_keys_user ON api_keys (user_id, id);
