-- Every debit updates `grants.remaining`. An index whose predicate names that column
-- (grants_live: WHERE remaining > 0) makes every such update a new index entry in every index
-- of the table instead of a heap-only (HOT) update; on a busy account the dead entries pile up
-- faster than vacuum removes them, and reading its live grants slows down minute by minute.
-- An account holds a handful of grants, which grants_account finds as well.
DROP INDEX grants_live;
-- Room on each page for the new version of an updated grant, so that updates stay HOT.
ALTER TABLE grants SET (fillfactor = 80);
