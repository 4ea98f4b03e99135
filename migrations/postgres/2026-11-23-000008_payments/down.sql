DROP INDEX subscriptions_past_due;
ALTER TABLE subscriptions DROP COLUMN past_due_since;
ALTER TABLE subscriptions DROP COLUMN version;
DROP TABLE payment_customers;
DROP TABLE payment_charges;
DROP TABLE payments;
