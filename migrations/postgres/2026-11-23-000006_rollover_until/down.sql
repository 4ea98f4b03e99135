ALTER TABLE grants DROP COLUMN rollover_until;
