-- Tables for the checkout comparison: the bare SQL of one checkout, in its own schema of the bench
-- database (shapes of orders.orders / orders.order_lines and a stock row per product).
CREATE SCHEMA IF NOT EXISTS bench;
DROP TABLE IF EXISTS bench.checkout_lines, bench.checkout_orders, bench.checkout_stock;
CREATE TABLE bench.checkout_orders (
    id UUID PRIMARY KEY, user_id TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'paid',
    total NUMERIC(12, 2) NOT NULL, shipping_address JSONB NOT NULL, idempotency_key TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(), UNIQUE (user_id, idempotency_key));
CREATE TABLE bench.checkout_lines (
    order_id UUID NOT NULL REFERENCES bench.checkout_orders (id), product_id BIGINT NOT NULL,
    unit_price NUMERIC(12, 2) NOT NULL, quantity INT NOT NULL, PRIMARY KEY (order_id, product_id));
CREATE TABLE bench.checkout_stock (
    product_id BIGINT PRIMARY KEY, quantity INT NOT NULL CHECK (quantity >= 0));
INSERT INTO bench.checkout_stock SELECT g, 2000000000 FROM generate_series(1, 100) g;
