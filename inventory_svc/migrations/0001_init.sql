-- Inventory schema: warehouses, stock with reservations, the stock ledger, commit/restock records.

CREATE TABLE warehouses (
    id         BIGINT PRIMARY KEY,
    code       TEXT   NOT NULL UNIQUE,
    name       TEXT   NOT NULL,
    priority   INT    NOT NULL DEFAULT 100
);
INSERT INTO warehouses (id, code, name, priority) VALUES
    (1, 'EAST', 'East distribution centre', 10),
    (2, 'WEST', 'West distribution centre', 20);

-- Products inventory knows (has ever held stock for) and their event version counter.
CREATE TABLE products (
    product_id BIGINT PRIMARY KEY CHECK (product_id > 0),
    version    BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE stock (
    product_id   BIGINT NOT NULL REFERENCES products (product_id),
    warehouse_id BIGINT NOT NULL REFERENCES warehouses (id),
    quantity     INT    NOT NULL,
    reserved     INT    NOT NULL DEFAULT 0,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (product_id, warehouse_id),
    CONSTRAINT stock_reserved_within_quantity CHECK (0 <= reserved AND reserved <= quantity)
);

CREATE TABLE reservations (
    id           UUID PRIMARY KEY,
    owner        VARCHAR(255) NOT NULL,
    product_id   BIGINT NOT NULL,
    warehouse_id BIGINT NOT NULL,
    quantity     INT    NOT NULL CHECK (quantity > 0),
    status       TEXT   NOT NULL CHECK (status IN ('active', 'committed', 'released', 'expired')),
    expires_at   TIMESTAMPTZ NOT NULL,
    order_id     TEXT,
    request_id   VARCHAR(64),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    FOREIGN KEY (product_id, warehouse_id) REFERENCES stock (product_id, warehouse_id)
);
CREATE INDEX reservations_due ON reservations (expires_at) WHERE status = 'active';
CREATE INDEX reservations_active_stock ON reservations (product_id, warehouse_id) WHERE status = 'active';
CREATE INDEX reservations_order ON reservations (order_id) WHERE order_id IS NOT NULL;
CREATE UNIQUE INDEX reservations_request ON reservations (request_id, warehouse_id) WHERE request_id IS NOT NULL;

-- One row per movement; for every stock row, quantity = sum(quantity_delta) and
-- reserved = sum(reserved_delta) over its ledger rows.
CREATE TABLE stock_ledger (
    id             BIGSERIAL PRIMARY KEY,
    product_id     BIGINT NOT NULL,
    warehouse_id   BIGINT NOT NULL,
    movement       TEXT   NOT NULL CHECK (movement IN
                       ('receive', 'adjust', 'reserve', 'release', 'expire', 'commit', 'restock')),
    quantity_delta INT    NOT NULL,
    reserved_delta INT    NOT NULL,
    reservation_id UUID,
    order_id       TEXT,
    reason         TEXT,
    actor          TEXT   NOT NULL DEFAULT '',
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX stock_ledger_stock ON stock_ledger (product_id, warehouse_id);

-- Commit and restock are idempotent by order id.
CREATE TABLE order_commits (
    order_id     TEXT PRIMARY KEY,
    committed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    restocked_at TIMESTAMPTZ,
    restocked_quantity INT
);

-- Idempotent admin requests (adjust/receive/release with request_id).
CREATE TABLE applied_requests (
    request_id VARCHAR(64) PRIMARY KEY,
    operation  TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Reserve a batch of requests for ONE product in one statement (so one transaction, one commit).
--
-- Locking: the product's stock rows are locked in primary-key order (warehouse_id) before anything
-- is decided, so every writer of these rows takes them in the same order (no deadlocks), and no
-- lock is held while the application waits on the network: the caller sends this one statement in
-- autocommit mode and the lock ends with its commit.
--
-- Allocation: requests are served in array order, all-or-nothing each; warehouses are filled
-- greedily by (priority, id). The final writes are conditional UPDATEs
-- (`WHERE quantity - reserved >= delta`), so even a wrong computation could not oversell: it would
-- raise and roll the batch back. Requests whose request_id was already applied return their
-- original reservations ('replayed'). Every reservation gets a ledger row; the batch gets one
-- StockLevelChanged outbox event with the product's next version.
CREATE FUNCTION reserve_batch(
    p_product_id  BIGINT,
    p_owners      TEXT[],
    p_quantities  INT[],
    p_ttl_seconds DOUBLE PRECISION[],
    p_request_ids TEXT[],
    p_topic       TEXT,
    p_headers     JSONB
) RETURNS TABLE (idx INT, reservation_id UUID, warehouse_id BIGINT, quantity INT,
                 expires_at TIMESTAMPTZ, outcome TEXT, available INT)
LANGUAGE plpgsql AS $$
DECLARE
    wh_ids     BIGINT[];
    wh_avail   INT[];
    wh_delta   INT[];
    n_wh       INT;
    total_avail INT;
    i          INT;
    j          INT;
    remaining  INT;
    take       INT;
    new_id     UUID;
    exp        TIMESTAMPTZ;
    any_taken  BOOLEAN := FALSE;
    v_version  BIGINT;
    v_qty      INT;
    v_res      INT;
    v_event_id UUID;
    res_ids    UUID[] := '{}';
    res_idx    INT[] := '{}';
    res_wh     BIGINT[] := '{}';
    res_qty    INT[] := '{}';
    res_exp    TIMESTAMPTZ[] := '{}';
BEGIN
    -- lock in PK order, then read the allocation order
    PERFORM 1 FROM stock s WHERE s.product_id = p_product_id ORDER BY s.warehouse_id FOR UPDATE;
    SELECT array_agg(s.warehouse_id ORDER BY w.priority, s.warehouse_id),
           array_agg(s.quantity - s.reserved ORDER BY w.priority, s.warehouse_id)
      INTO wh_ids, wh_avail
      FROM stock s JOIN warehouses w ON w.id = s.warehouse_id
     WHERE s.product_id = p_product_id;
    IF wh_ids IS NULL THEN
        FOR i IN 1 .. array_length(p_quantities, 1) LOOP
            idx := i; outcome := 'unknown_product'; available := 0;
            reservation_id := NULL; warehouse_id := NULL; quantity := NULL; expires_at := NULL;
            RETURN NEXT;
        END LOOP;
        RETURN;
    END IF;
    n_wh := array_length(wh_ids, 1);
    wh_delta := array_fill(0, ARRAY[n_wh]);

    FOR i IN 1 .. array_length(p_quantities, 1) LOOP
        -- replay of an already applied request id
        IF p_request_ids[i] IS NOT NULL AND p_request_ids[i] <> '' AND EXISTS (
               SELECT 1 FROM reservations r WHERE r.request_id = p_request_ids[i]) THEN
            RETURN QUERY SELECT i, r.id, r.warehouse_id, r.quantity, r.expires_at, 'replayed'::TEXT, NULL::INT
                           FROM reservations r WHERE r.request_id = p_request_ids[i] ORDER BY r.warehouse_id;
            CONTINUE;
        END IF;
        total_avail := 0;
        FOR j IN 1 .. n_wh LOOP total_avail := total_avail + wh_avail[j]; END LOOP;
        IF total_avail < p_quantities[i] THEN
            idx := i; outcome := 'insufficient'; available := total_avail;
            reservation_id := NULL; warehouse_id := NULL; quantity := NULL; expires_at := NULL;
            RETURN NEXT;
            CONTINUE;
        END IF;
        remaining := p_quantities[i];
        exp := now() + make_interval(secs => p_ttl_seconds[i]);
        FOR j IN 1 .. n_wh LOOP
            EXIT WHEN remaining = 0;
            take := LEAST(wh_avail[j], remaining);
            CONTINUE WHEN take <= 0;
            wh_avail[j] := wh_avail[j] - take;
            wh_delta[j] := wh_delta[j] + take;
            remaining := remaining - take;
            new_id := gen_random_uuid();
            res_ids := res_ids || new_id; res_idx := res_idx || i; res_wh := res_wh || wh_ids[j];
            res_qty := res_qty || take; res_exp := res_exp || exp;
            any_taken := TRUE;
            idx := i; reservation_id := new_id; warehouse_id := wh_ids[j]; quantity := take;
            expires_at := exp; outcome := 'reserved'; available := NULL;
            RETURN NEXT;
        END LOOP;
    END LOOP;

    IF NOT any_taken THEN
        RETURN;
    END IF;

    FOR j IN 1 .. n_wh LOOP
        CONTINUE WHEN wh_delta[j] = 0;
        UPDATE stock s SET reserved = s.reserved + wh_delta[j], updated_at = now()
         WHERE s.product_id = p_product_id AND s.warehouse_id = wh_ids[j]
           AND s.quantity - s.reserved >= wh_delta[j];
        IF NOT FOUND THEN
            RAISE EXCEPTION 'reserve_batch: conditional update failed for product % warehouse %',
                p_product_id, wh_ids[j];
        END IF;
    END LOOP;

    INSERT INTO reservations (id, owner, product_id, warehouse_id, quantity, status, expires_at, request_id)
    SELECT u.id, p_owners[u.i], p_product_id, u.wh, u.q, 'active', u.e, NULLIF(p_request_ids[u.i], '')
      FROM unnest(res_ids, res_idx, res_wh, res_qty, res_exp) AS u(id, i, wh, q, e);

    INSERT INTO stock_ledger (product_id, warehouse_id, movement, quantity_delta, reserved_delta,
                              reservation_id, actor)
    SELECT p_product_id, u.wh, 'reserve', 0, u.q, u.id, p_owners[u.i]
      FROM unnest(res_ids, res_idx, res_wh, res_qty) AS u(id, i, wh, q);

    UPDATE products p SET version = p.version + 1 WHERE p.product_id = p_product_id
    RETURNING p.version INTO v_version;
    SELECT sum(s.quantity), sum(s.reserved) INTO v_qty, v_res FROM stock s WHERE s.product_id = p_product_id;
    v_event_id := gen_random_uuid();
    INSERT INTO outbox (event_id, topic, key, event_type, payload_json, message_type, headers)
    VALUES (
        v_event_id, p_topic, p_product_id::TEXT, 'inventory.stock_level_changed',
        jsonb_build_object(
            'eventId', v_event_id::TEXT,
            'productId', p_product_id::TEXT,
            'version', v_version::TEXT,
            'occurredAt', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            'stockLevelChanged', jsonb_build_object(
                'available', v_qty - v_res, 'inStock', (v_qty - v_res) > 0,
                'quantity', v_qty, 'reserved', v_res, 'movement', 'STOCK_MOVEMENT_RESERVE')),
        'shop.events.v1.InventoryEvent',
        p_headers || jsonb_build_object('event-id', v_event_id::TEXT,
                                        'event-type', 'inventory.stock_level_changed'));
END;
$$;
