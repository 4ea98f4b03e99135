ALTER TABLE grants RESET (fillfactor);
CREATE INDEX grants_live ON grants (account_id) WHERE remaining > 0;
