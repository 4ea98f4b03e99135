# Common tasks. `just --list` shows them; each is a plain cargo command you can run by hand.

# Start the server (SQLite at ./data/tollgate.db unless TOLLGATE__DATABASE__URL says otherwise).
serve:
    cargo run -p app -- serve

# Validate configuration and catalog (add --config FILE for a product's file).
check-config *ARGS:
    cargo run -p app -- {{ARGS}} config check

# Run every test.
test:
    cargo test --workspace

# Formatting, lints and the core-purity rule, as CI runs them, then the tests.
ci:
    bash .ci/run

# Apply database migrations.
migrate:
    cargo run -p app -- migrate

# Prove every account's ledger against its journal.
verify-ledger:
    cargo run -p app -- ledger verify

# Give a user the admin (or user) role: just role ada@example.com admin
role EMAIL ROLE:
    cargo run -p app -- user role {{EMAIL}} {{ROLE}}
