-- order_svc: carts, orders, archive, and the sandbox payment provider's ledger (schema `orders`).

-- One row per user with a cart: its row lock serializes every change of that user's cart and the
-- creation of an order from it; `version` feeds deterministic request ids for inventory calls.
CREATE TABLE carts (
    user_id     TEXT        PRIMARY KEY,
    version     BIGINT      NOT NULL DEFAULT 0,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE cart_items (
    user_id     TEXT        NOT NULL REFERENCES carts (user_id) ON DELETE CASCADE,
    product_id  BIGINT      NOT NULL,
    quantity    INT         NOT NULL CHECK (quantity > 0),
    position    BIGINT      GENERATED ALWAYS AS IDENTITY,
    added_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, product_id)
);

-- The inventory reservations holding a cart line's units (a line may span warehouses).
-- state 'lapsed': no longer holds units (expired, released, or committed to an order that failed).
CREATE TABLE cart_reservations (
    reservation_id  UUID        PRIMARY KEY,
    user_id         TEXT        NOT NULL,
    product_id      BIGINT      NOT NULL,
    quantity        INT         NOT NULL CHECK (quantity > 0),
    expires_at      TIMESTAMPTZ NOT NULL,
    state           TEXT        NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'lapsed')),
    FOREIGN KEY (user_id, product_id) REFERENCES cart_items (user_id, product_id) ON DELETE CASCADE
);
CREATE INDEX cart_reservations_line ON cart_reservations (user_id, product_id);

-- AddCartItem request ids already applied (AIP-155); pruned after a day by the recovery job.
CREATE TABLE cart_requests (
    user_id     TEXT        NOT NULL,
    request_id  TEXT        NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, request_id)
);

CREATE TABLE orders (
    id                    UUID          PRIMARY KEY,
    user_id               TEXT          NOT NULL,
    status                VARCHAR(30)   NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'paid', 'shipped', 'delivered', 'cancelled', 'refunded', 'failed')),
    total                 NUMERIC(12,2) NOT NULL CHECK (total >= 0),
    currency              CHAR(3)       NOT NULL DEFAULT 'USD',
    shipping_address      JSONB         NOT NULL,
    billing_address       JSONB,
    notes                 TEXT,
    -- exactly-once checkout (layer 2): one order per (user, key); the request's hash and the
    -- checkout's final response (a serialized google.rpc.Status) are replayed for that key.
    idempotency_key       VARCHAR(255)  NOT NULL,
    request_hash          TEXT          NOT NULL,
    checkout_outcome      BYTEA,
    -- the database half of the "processing" lease: who drives the checkout, and until when
    lease_owner           UUID,
    lease_until           TIMESTAMPTZ,
    stock_committed_at    TIMESTAMPTZ,
    payment_status        VARCHAR(20)   NOT NULL DEFAULT 'pending'
        CHECK (payment_status IN ('pending', 'captured', 'declined', 'failed', 'refunded')),
    payment_provider      TEXT          NOT NULL,
    payment_reference     TEXT,
    payment_attempted_at  TIMESTAMPTZ,
    decline_code          TEXT,
    last_error            TEXT,
    failure_reason        TEXT,
    failure_message       TEXT,
    failure_product_ids   BIGINT[],
    tracking_number       TEXT,
    -- a cancel or refund whose remote effects (refund, restock) are under way; blocks other moves
    transition_to         VARCHAR(30),
    transition_reason     TEXT,
    -- per-order event version: order_created is 1, each status change adds one
    version               BIGINT        NOT NULL DEFAULT 1,
    archive_status        VARCHAR(20)   NOT NULL DEFAULT 'active' CHECK (archive_status IN ('active', 'archived')),
    archived_at           TIMESTAMPTZ,
    created_at            TIMESTAMPTZ   NOT NULL DEFAULT now(),
    updated_at            TIMESTAMPTZ   NOT NULL DEFAULT now(),
    CONSTRAINT orders_user_idempotency_key UNIQUE (user_id, idempotency_key)
);
CREATE INDEX orders_user_created ON orders (user_id, created_at DESC, id DESC);
CREATE INDEX orders_unfinished ON orders (updated_at) WHERE status = 'pending' OR transition_to IS NOT NULL;
CREATE INDEX orders_archive_candidates ON orders (created_at, id)
    WHERE archived_at IS NULL AND status IN ('delivered', 'cancelled', 'refunded');
CREATE INDEX idx_orders_archive_status ON orders (archive_status);

CREATE TABLE order_lines (
    order_id    UUID          NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    position    INT           NOT NULL,
    product_id  BIGINT        NOT NULL,
    title       TEXT          NOT NULL,
    unit_price  NUMERIC(12,2) NOT NULL CHECK (unit_price >= 0),
    quantity    INT           NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, product_id)
);

-- The reservations a pending checkout takes from the cart (and any it re-reserved). A reservation
-- belongs to at most one unfinished order; rows are dropped when the order fails.
CREATE TABLE order_reservations (
    reservation_id  UUID    PRIMARY KEY,
    order_id        UUID    NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    product_id      BIGINT  NOT NULL,
    quantity        INT     NOT NULL CHECK (quantity > 0)
);
CREATE INDEX order_reservations_order ON order_reservations (order_id);

-- Warm tier: archived orders as JSON with their lines (seed Deep Dive 5), kept 7 years.
CREATE TABLE orders_archive (
    order_id          UUID        PRIMARY KEY,
    user_id           TEXT        NOT NULL,
    archive_data      JSONB       NOT NULL,
    order_created_at  TIMESTAMPTZ NOT NULL,
    archived_at       TIMESTAMPTZ NOT NULL,
    exported_at       TIMESTAMPTZ,
    export_file       TEXT
);
CREATE INDEX orders_archive_created ON orders_archive (order_created_at);
CREATE INDEX orders_archive_unexported ON orders_archive (order_created_at) WHERE exported_at IS NULL;

-- The sandbox payment provider's own ledger. It stands in for an external provider (Stripe test
-- mode): order_svc reaches it only through order_svc/payments.py, in its own autocommit statements,
-- never inside an order transaction. One charge per idempotency key, as a real provider keeps.
CREATE TABLE sandbox_charges (
    idempotency_key  TEXT          PRIMARY KEY,
    reference        TEXT          NOT NULL UNIQUE,
    status           TEXT          NOT NULL CHECK (status IN ('captured', 'declined', 'voided', 'refunded')),
    amount           NUMERIC(12,2) NOT NULL,
    currency         CHAR(3)       NOT NULL,
    decline_code     TEXT,
    attempts         INT           NOT NULL DEFAULT 1,
    created_at       TIMESTAMPTZ   NOT NULL DEFAULT now(),
    refunded_at      TIMESTAMPTZ
);
