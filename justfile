# Common tasks. `just --list` shows them; each is a plain cargo command you can run by hand.

# Start the server (nothing is persisted yet: the store arrives with the persistence work).
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
