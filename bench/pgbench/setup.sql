-- Tables for the pgbench comparisons, in their own schema of the bench database.
CREATE SCHEMA IF NOT EXISTS bench;
DROP TABLE IF EXISTS bench.reservations, bench.stock;
CREATE TABLE bench.stock (
    product_id BIGINT, warehouse_id BIGINT, quantity INT NOT NULL, reserved INT NOT NULL DEFAULT 0,
    PRIMARY KEY (product_id, warehouse_id), CHECK (0 <= reserved AND reserved <= quantity));
CREATE TABLE bench.reservations (
    id BIGSERIAL PRIMARY KEY, owner TEXT NOT NULL, product_id BIGINT NOT NULL, warehouse_id BIGINT NOT NULL,
    quantity INT NOT NULL, expires_at TIMESTAMPTZ NOT NULL);
INSERT INTO bench.stock VALUES (1, 1, 2000000000, 0);
