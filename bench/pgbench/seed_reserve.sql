-- (b) the seed's design (DESIGN.md Deep Dive 1): lock, check, update, insert, in one transaction.
\set owner random(1, 1000000)
BEGIN;
SELECT quantity, reserved FROM bench.stock WHERE product_id = 1 AND warehouse_id = 1 FOR UPDATE;
UPDATE bench.stock SET reserved = reserved + 1 WHERE product_id = 1 AND warehouse_id = 1;
INSERT INTO bench.reservations (owner, product_id, warehouse_id, quantity, expires_at)
VALUES (:owner, 1, 1, 1, now() + interval '30 minutes');
COMMIT;
