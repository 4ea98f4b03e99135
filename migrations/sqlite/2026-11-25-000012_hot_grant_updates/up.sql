-- The same index goes on both backends (see the PostgreSQL migration for why it goes).
DROP INDEX grants_live;
