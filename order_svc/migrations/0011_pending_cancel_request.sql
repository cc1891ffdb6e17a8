-- A cancel of a PENDING order is written down here, with its lease, before its remote steps (void,
-- refund, restock), so that whoever drives the order next (a retry of its checkout key, recovery)
-- ends it CANCELLED. Columns of its own rather than transition_to: the previous version's pods read a
-- PENDING order with transition_to set as a half-done cancel of a PAID order, which they can never
-- finish (their recovery restocks it and reports it done on every pass; their checkout retries can
-- capture and then fail to complete it), while they ignore these and handle the order as before.
ALTER TABLE orders ADD COLUMN cancel_requested_at TIMESTAMPTZ, ADD COLUMN cancel_reason TEXT;
