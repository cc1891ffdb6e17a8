-- The database's limit for one checkout: order insert, line insert, conditional stock update.
\set product random(1, 100)
BEGIN;
WITH o AS (
    INSERT INTO bench.checkout_orders (id, user_id, total, shipping_address, idempotency_key)
    VALUES (gen_random_uuid(), 'u' || :client_id, 19.99, '{"city": "London"}', gen_random_uuid()::text)
    RETURNING id)
INSERT INTO bench.checkout_lines (order_id, product_id, unit_price, quantity) SELECT id, :product, 19.99, 1 FROM o;
UPDATE bench.checkout_stock SET quantity = quantity - 1 WHERE product_id = :product AND quantity >= 1;
COMMIT;
