-- PostgreSQL checks the ledger's references at COMMIT from this migration on, because it
-- receives a decision's rows pipelined. SQLite runs statements one by one in the order they
-- were built, so nothing changes here; the migration exists to keep both lists alike.
SELECT 1;
