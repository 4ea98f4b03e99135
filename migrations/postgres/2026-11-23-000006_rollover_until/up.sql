-- When credits carried over from a period allowance expire: the end of the next period.
ALTER TABLE grants ADD COLUMN rollover_until BIGINT;
