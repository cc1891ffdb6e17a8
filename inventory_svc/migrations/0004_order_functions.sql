-- Commit, restock and extend as one statement each (like reserve_batch): one round trip and one
-- transaction per call instead of BEGIN, several statements or pipelines, COMMIT. Their stock events
-- are written as protobuf bytes (`payload`), as the Python writers do, so the relay sends them as
-- they are.

-- Protobuf wire format: a varint (negative values as their 64-bit two's complement, ten bytes).
CREATE FUNCTION pb_varint(v BIGINT) RETURNS BYTEA
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    encoded BYTEA := '\x'::BYTEA;
BEGIN
    IF v < 0 THEN
        FOR i IN 1 .. 9 LOOP
            encoded := encoded || set_byte('\x00'::BYTEA, 0, ((v & 127) | 128)::INT);
            v := v >> 7;  -- arithmetic shift: the low 63 bits come out as for the unsigned value
        END LOOP;
        RETURN encoded || '\x01'::BYTEA;
    END IF;
    WHILE v >= 128 LOOP
        encoded := encoded || set_byte('\x00'::BYTEA, 0, ((v & 127) | 128)::INT);
        v := v >> 7;
    END LOOP;
    RETURN encoded || set_byte('\x00'::BYTEA, 0, v::INT);
END;
$$;

-- shop.events.v1.InventoryEvent with a StockLevelChanged payload (events.proto field numbers), as
-- SerializeToString writes it: fields in number order, zero scalars left out, the message fields
-- (occurred_at, the oneof member) always present. One function with constant tags: a SQL wrapper
-- per field was not inlined and cost ~35 us per event, this ~14 us (jsonb_build_object: ~7 us).
CREATE FUNCTION stock_level_changed_event(
    p_event_id     UUID,
    p_product_id   BIGINT,
    p_version      BIGINT,
    p_occurred_at  TIMESTAMPTZ,
    p_quantity     BIGINT,
    p_reserved     BIGINT,
    p_movement     INT,
    p_warehouse_id BIGINT
) RETURNS BYTEA
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE SET search_path FROM CURRENT AS $$
DECLARE
    v_epoch     NUMERIC := extract(epoch FROM p_occurred_at);
    v_seconds   BIGINT := floor(v_epoch)::BIGINT;
    v_nanos     BIGINT := ((v_epoch - v_seconds) * 1000000000)::BIGINT;
    v_available BIGINT := p_quantity - p_reserved;
    v_time      BYTEA := '\x'::BYTEA;
    v_change    BYTEA := '\x'::BYTEA;
    v_event     BYTEA := '\x0a24'::BYTEA || convert_to(p_event_id::TEXT, 'UTF8');  -- 1: 36 chars
BEGIN
    IF v_seconds <> 0 THEN v_time := '\x08'::BYTEA || pb_varint(v_seconds); END IF;
    IF v_nanos <> 0 THEN v_time := v_time || '\x10'::BYTEA || pb_varint(v_nanos); END IF;
    IF v_available <> 0 THEN v_change := '\x08'::BYTEA || pb_varint(v_available); END IF;
    IF v_available > 0 THEN v_change := v_change || '\x1001'::BYTEA; END IF;  -- in_stock
    IF p_quantity <> 0 THEN v_change := v_change || '\x18'::BYTEA || pb_varint(p_quantity); END IF;
    IF p_reserved <> 0 THEN v_change := v_change || '\x20'::BYTEA || pb_varint(p_reserved); END IF;
    IF p_movement <> 0 THEN v_change := v_change || '\x28'::BYTEA || pb_varint(p_movement); END IF;
    IF p_warehouse_id <> 0 THEN v_change := v_change || '\x30'::BYTEA || pb_varint(p_warehouse_id); END IF;
    IF p_product_id <> 0 THEN v_event := v_event || '\x10'::BYTEA || pb_varint(p_product_id); END IF;
    IF p_version <> 0 THEN v_event := v_event || '\x18'::BYTEA || pb_varint(p_version); END IF;
    RETURN v_event
        || '\x22'::BYTEA || pb_varint(length(v_time)) || v_time        -- 4: occurred_at
        || '\x52'::BYTEA || pb_varint(length(v_change)) || v_change;   -- 10: stock_level_changed
END;
$$;

-- One StockLevelChanged outbox event per product, in product order, each with the product's next
-- version and its totals as they are now (inside the caller's transaction, after its changes).
CREATE FUNCTION emit_stock_events(p_product_ids BIGINT[], p_movement INT, p_topic TEXT, p_headers JSONB)
RETURNS VOID
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_product  BIGINT;
    v_version  BIGINT;
    v_qty      BIGINT;
    v_res      BIGINT;
    v_event_id UUID;
BEGIN
    FOR v_product IN SELECT DISTINCT u.p FROM unnest(p_product_ids) AS u(p) ORDER BY 1 LOOP
        UPDATE products p SET version = p.version + 1 WHERE p.product_id = v_product
        RETURNING p.version INTO v_version;
        SELECT coalesce(sum(s.quantity), 0), coalesce(sum(s.reserved), 0) INTO v_qty, v_res
          FROM stock s WHERE s.product_id = v_product;
        v_event_id := gen_random_uuid();
        INSERT INTO outbox (event_id, topic, key, event_type, payload, headers)
        VALUES (
            v_event_id, p_topic, v_product::TEXT, 'inventory.stock_level_changed',
            stock_level_changed_event(v_event_id, v_product, coalesce(v_version, 0), now(), v_qty, v_res,
                                      p_movement, 0),
            p_headers || jsonb_build_object('event-id', v_event_id::TEXT,
                                            'event-type', 'inventory.stock_level_changed'));
    END LOOP;
END;
$$;

-- Reserved -> sold for an order, idempotent by order id. Outcomes (one per row):
--   'committed'  the reservations, now committed, in (product, warehouse, id) order
--   'already'    the order was committed before: its committed reservations, nothing changed
--   'restocked'  the order was restocked (or cancelled before any commit): refused
--   'not_found' / 'not_active'  the offending reservation ids: refused, nothing changed
--
-- Locking: the order's commit record first (a concurrent commit of the same order waits on it and
-- then takes the 'already' path), then the reservations by id, then their stock rows in primary-key
-- order, then the products' version rows in id order; the same order as release and restock, and
-- reserve_batch takes stock before product rows too. A refused commit deletes the record it just
-- inserted, which to a waiting commit of the same order is the same as a rollback.
CREATE FUNCTION commit_order(
    p_order_id        TEXT,
    p_reservation_ids UUID[],
    p_actor           TEXT,
    p_topic           TEXT,
    p_headers         JSONB
) RETURNS TABLE (outcome TEXT, id UUID, owner VARCHAR, product_id BIGINT, warehouse_id BIGINT,
                 quantity INT, status TEXT, expires_at TIMESTAMPTZ, order_id TEXT)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    v_restocked_at TIMESTAMPTZ;
    v_refused      UUID[];
    v_outcome      TEXT := 'not_found';
BEGIN
    INSERT INTO order_commits (order_id) VALUES (p_order_id) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        SELECT oc.restocked_at INTO v_restocked_at FROM order_commits oc
         WHERE oc.order_id = p_order_id FOR UPDATE;
        IF v_restocked_at IS NOT NULL THEN
            RETURN QUERY SELECT 'restocked'::TEXT, NULL::UUID, NULL::VARCHAR, NULL::BIGINT, NULL::BIGINT,
                                NULL::INT, NULL::TEXT, NULL::TIMESTAMPTZ, p_order_id;
            RETURN;
        END IF;
        RETURN QUERY SELECT 'already'::TEXT, r.id, r.owner, r.product_id, r.warehouse_id, r.quantity,
                            r.status, r.expires_at, r.order_id
                       FROM reservations r WHERE r.order_id = p_order_id AND r.status = 'committed'
                      ORDER BY r.product_id, r.warehouse_id, r.id;
        RETURN;
    END IF;

    PERFORM 1 FROM reservations r WHERE r.id = ANY(p_reservation_ids) ORDER BY r.id FOR UPDATE;
    SELECT array_agg(u.rid ORDER BY u.n) INTO v_refused
      FROM unnest(p_reservation_ids) WITH ORDINALITY AS u(rid, n)
     WHERE NOT EXISTS (SELECT 1 FROM reservations r WHERE r.id = u.rid);
    IF v_refused IS NULL THEN
        SELECT array_agg(r.id ORDER BY r.id) INTO v_refused
          FROM reservations r WHERE r.id = ANY(p_reservation_ids) AND r.status <> 'active';
        v_outcome := 'not_active';
    END IF;
    IF v_refused IS NOT NULL THEN
        DELETE FROM order_commits oc WHERE oc.order_id = p_order_id;
        RETURN QUERY SELECT v_outcome, u.rid, NULL::VARCHAR, NULL::BIGINT, NULL::BIGINT, NULL::INT,
                            NULL::TEXT, NULL::TIMESTAMPTZ, p_order_id
                       FROM unnest(v_refused) AS u(rid);
        RETURN;
    END IF;

    -- reservations and ledger first: they lock nothing a reserve batch waits on, so the stock rows
    -- are held only for the last statements before the commit
    WITH done AS (
        UPDATE reservations r SET status = 'committed', order_id = p_order_id, updated_at = now()
         WHERE r.id = ANY(p_reservation_ids)
        RETURNING r.id, r.product_id, r.warehouse_id, r.quantity
    )
    INSERT INTO stock_ledger (product_id, warehouse_id, movement, quantity_delta, reserved_delta,
                              reservation_id, order_id, actor)
    SELECT d.product_id, d.warehouse_id, 'commit', -d.quantity, -d.quantity, d.id, p_order_id, p_actor
      FROM done d ORDER BY d.product_id, d.warehouse_id, d.id;

    PERFORM 1 FROM stock s
      JOIN (SELECT DISTINCT r.product_id, r.warehouse_id FROM reservations r
             WHERE r.id = ANY(p_reservation_ids)) AS k
        ON s.product_id = k.product_id AND s.warehouse_id = k.warehouse_id
     ORDER BY s.product_id, s.warehouse_id FOR UPDATE OF s;
    UPDATE stock s SET quantity = s.quantity - d.units, reserved = s.reserved - d.units, updated_at = now()
      FROM (SELECT r.product_id, r.warehouse_id, sum(r.quantity)::INT AS units FROM reservations r
             WHERE r.id = ANY(p_reservation_ids) GROUP BY r.product_id, r.warehouse_id) AS d
     WHERE s.product_id = d.product_id AND s.warehouse_id = d.warehouse_id;

    PERFORM emit_stock_events(
        (SELECT array_agg(r.product_id) FROM reservations r WHERE r.id = ANY(p_reservation_ids)),
        6,  -- STOCK_MOVEMENT_COMMIT
        p_topic, p_headers);

    RETURN QUERY SELECT 'committed'::TEXT, r.id, r.owner, r.product_id, r.warehouse_id, r.quantity,
                        r.status, r.expires_at, r.order_id
                   FROM reservations r WHERE r.id = ANY(p_reservation_ids)
                  ORDER BY r.product_id, r.warehouse_id, r.id;
END;
$$;

-- Sold -> back on hand for a cancelled/refunded order, idempotent by order id. One row:
--   ('restocked', units)        restocked now
--   ('already', units)          restocked before: the units of that first restock, nothing changed
--   ('never_committed', 0)      no commit: recorded, so a late commit for the order is refused
-- A commit of the same order running concurrently is waited for (its record's insert), then this
-- restocks what it committed, instead of answering 'never_committed' while the commit lands.
CREATE FUNCTION restock_order(p_order_id TEXT, p_reason TEXT, p_actor TEXT, p_topic TEXT, p_headers JSONB)
RETURNS TABLE (outcome TEXT, quantity INT)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    v_found        BOOLEAN;
    v_restocked_at TIMESTAMPTZ;
    v_restocked    INT;
    v_total        INT;
    v_products     BIGINT[];
BEGIN
    FOR attempt IN 1 .. 3 LOOP
        SELECT oc.restocked_at, oc.restocked_quantity INTO v_restocked_at, v_restocked
          FROM order_commits oc WHERE oc.order_id = p_order_id FOR UPDATE;
        v_found := FOUND;
        EXIT WHEN v_found;
        INSERT INTO order_commits (order_id, restocked_at, restocked_quantity)
        VALUES (p_order_id, now(), 0) ON CONFLICT DO NOTHING;
        IF FOUND THEN
            RETURN QUERY SELECT 'never_committed'::TEXT, 0;
            RETURN;
        END IF;
        -- a commit of this order committed meanwhile: lock its record and restock it
    END LOOP;
    IF NOT v_found THEN
        RAISE EXCEPTION 'restock_order: the commit record of order % keeps changing', p_order_id;
    END IF;
    IF v_restocked_at IS NOT NULL THEN
        RETURN QUERY SELECT 'already'::TEXT, coalesce(v_restocked, 0);
        RETURN;
    END IF;

    -- ledger rows and the order's record first, the stock rows (which reserve batches wait on) last
    INSERT INTO stock_ledger (product_id, warehouse_id, movement, quantity_delta, reserved_delta,
                              reservation_id, order_id, reason, actor)
    SELECT r.product_id, r.warehouse_id, 'restock', r.quantity, 0, r.id, p_order_id,
           NULLIF(left(p_reason, 200), ''), p_actor
      FROM reservations r WHERE r.order_id = p_order_id AND r.status = 'committed'
     ORDER BY r.product_id, r.warehouse_id, r.id;
    SELECT coalesce(sum(r.quantity), 0)::INT, array_agg(r.product_id) INTO v_total, v_products
      FROM reservations r WHERE r.order_id = p_order_id AND r.status = 'committed';
    UPDATE order_commits oc SET restocked_at = now(), restocked_quantity = v_total
     WHERE oc.order_id = p_order_id;

    PERFORM 1 FROM stock s
      JOIN (SELECT DISTINCT r.product_id, r.warehouse_id FROM reservations r
             WHERE r.order_id = p_order_id AND r.status = 'committed') AS k
        ON s.product_id = k.product_id AND s.warehouse_id = k.warehouse_id
     ORDER BY s.product_id, s.warehouse_id FOR UPDATE OF s;
    UPDATE stock s SET quantity = s.quantity + d.units, updated_at = now()
      FROM (SELECT r.product_id, r.warehouse_id, sum(r.quantity)::INT AS units FROM reservations r
             WHERE r.order_id = p_order_id AND r.status = 'committed'
             GROUP BY r.product_id, r.warehouse_id) AS d
     WHERE s.product_id = d.product_id AND s.warehouse_id = d.warehouse_id;

    IF v_products IS NOT NULL THEN
        PERFORM emit_stock_events(v_products, 7, p_topic, p_headers);  -- STOCK_MOVEMENT_RESTOCK
    END IF;
    RETURN QUERY SELECT 'restocked'::TEXT, v_total;
END;
$$;

-- Extend active reservations (never shortening them) and read them all back, in one statement.
CREATE FUNCTION extend_reservations(p_reservation_ids UUID[], p_ttl_seconds DOUBLE PRECISION)
RETURNS TABLE (id UUID, owner VARCHAR, product_id BIGINT, warehouse_id BIGINT, quantity INT,
               status TEXT, expires_at TIMESTAMPTZ, order_id TEXT)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
BEGIN
    UPDATE reservations r
       SET expires_at = greatest(r.expires_at, now() + make_interval(secs => p_ttl_seconds)),
           updated_at = now()
     WHERE r.id = ANY(p_reservation_ids) AND r.status = 'active';
    RETURN QUERY SELECT r.id, r.owner, r.product_id, r.warehouse_id, r.quantity, r.status,
                        r.expires_at, r.order_id
                   FROM reservations r WHERE r.id = ANY(p_reservation_ids);
END;
$$;
