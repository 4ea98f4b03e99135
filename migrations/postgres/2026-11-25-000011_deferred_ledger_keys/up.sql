-- The ledger sends a decision's rows together (pipelined), and PostgreSQL may run them in a
-- different order than they were built: a leg can arrive before its transaction. Checking
-- these references at COMMIT instead of per statement keeps them enforced without an order.
ALTER TABLE ledger_transactions ALTER CONSTRAINT ledger_transactions_hold_id_fkey DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE ledger_transactions ALTER CONSTRAINT ledger_transactions_grant_id_fkey DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE ledger_transactions ALTER CONSTRAINT ledger_transactions_refund_of_fkey DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE ledger_legs ALTER CONSTRAINT ledger_legs_txn_id_fkey DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE ledger_legs ALTER CONSTRAINT ledger_legs_grant_id_fkey DEFERRABLE INITIALLY DEFERRED;
