-- One reserve request id answers one request even when it is sent for two products at once.
-- reserve_batch_v2 (0007) checked "was this id used?" with EXISTS before its insert, and the unique
-- key is (request_id, warehouse_id): two batches for different products (never serialized by a
-- stock row) with the same id, each reserving in another warehouse, both missed the other's
-- uncommitted row and both committed, so both callers were told they hold units and any retry of
-- either was REQUEST_ID_REUSED while its units stayed held. Each batch now takes a transaction
-- advisory lock per request id first, so the second one's EXISTS sees the first's row and answers
-- REQUEST_ID_REUSED. Same signature and result: replaced in place, so the previous version's pods
-- get the lock too (the body is 0007's otherwise).
CREATE OR REPLACE FUNCTION reserve_batch_v2(
    p_product_id  BIGINT,
    p_owners      TEXT[],
    p_quantities  INT[],
    p_ttl_seconds DOUBLE PRECISION[],
    p_request_ids TEXT[],
    p_topic       TEXT,
    p_headers     JSONB
) RETURNS TABLE (idx INT, reservation_id UUID, warehouse_id BIGINT, quantity INT,
                 expires_at TIMESTAMPTZ, outcome TEXT, available INT, status TEXT)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
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
    v_lock     INT;
BEGIN
    -- one batch at a time per request id, whatever the product; in key order, so two batches never
    -- wait on each other's ids crosswise, and before the stock lock, so none holds a stock row while
    -- it waits. The two-int form: its keys never meet the single-bigint ones of the leader leases.
    FOR v_lock IN SELECT DISTINCT hashtext(r) FROM unnest(p_request_ids) AS r
                   WHERE r IS NOT NULL AND r <> '' ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(20261204, v_lock);
    END LOOP;
    -- lock in PK order, then read the allocation order
    PERFORM 1 FROM stock s WHERE s.product_id = p_product_id ORDER BY s.warehouse_id FOR UPDATE;
    SELECT array_agg(s.warehouse_id ORDER BY w.priority, s.warehouse_id),
           array_agg(s.quantity - s.reserved ORDER BY w.priority, s.warehouse_id)
      INTO wh_ids, wh_avail
      FROM stock s JOIN warehouses w ON w.id = s.warehouse_id
     WHERE s.product_id = p_product_id;
    IF wh_ids IS NULL THEN
        FOR i IN 1 .. array_length(p_quantities, 1) LOOP
            idx := i; outcome := 'unknown_product'; available := 0; status := NULL;
            reservation_id := NULL; warehouse_id := NULL; quantity := NULL; expires_at := NULL;
            RETURN NEXT;
        END LOOP;
        RETURN;
    END IF;
    n_wh := array_length(wh_ids, 1);
    wh_delta := array_fill(0, ARRAY[n_wh]);

    FOR i IN 1 .. array_length(p_quantities, 1) LOOP
        -- an already applied request id: the same request again (replay), or another one (reused)
        IF p_request_ids[i] IS NOT NULL AND p_request_ids[i] <> '' AND EXISTS (
               SELECT 1 FROM reservations r WHERE r.request_id = p_request_ids[i]) THEN
            -- requested_quantity is NULL on rows from before 0007: those compare product and owner only
            IF EXISTS (SELECT 1 FROM reservations r WHERE r.request_id = p_request_ids[i]
                          AND (r.product_id <> p_product_id OR r.owner <> p_owners[i]
                               OR r.requested_quantity <> p_quantities[i])) THEN
                idx := i; outcome := 'reused'; available := NULL; status := NULL;
                reservation_id := NULL; warehouse_id := NULL; quantity := NULL; expires_at := NULL;
                RETURN NEXT;
                CONTINUE;
            END IF;
            RETURN QUERY SELECT i, r.id, r.warehouse_id, r.quantity, r.expires_at, 'replayed'::TEXT, NULL::INT,
                                r.status::TEXT
                           FROM reservations r WHERE r.request_id = p_request_ids[i] ORDER BY r.warehouse_id;
            CONTINUE;
        END IF;
        total_avail := 0;
        FOR j IN 1 .. n_wh LOOP total_avail := total_avail + wh_avail[j]; END LOOP;
        IF total_avail < p_quantities[i] THEN
            idx := i; outcome := 'insufficient'; available := total_avail; status := NULL;
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
            expires_at := exp; outcome := 'reserved'; available := NULL; status := 'active';
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
            RAISE EXCEPTION 'reserve_batch_v2: conditional update failed for product % warehouse %',
                p_product_id, wh_ids[j];
        END IF;
    END LOOP;

    INSERT INTO reservations (id, owner, product_id, warehouse_id, quantity, status, expires_at, request_id,
                              requested_quantity)
    SELECT u.id, p_owners[u.i], p_product_id, u.wh, u.q, 'active', u.e, NULLIF(p_request_ids[u.i], ''),
           p_quantities[u.i]
      FROM unnest(res_ids, res_idx, res_wh, res_qty, res_exp) AS u(id, i, wh, q, e);

    INSERT INTO stock_ledger (product_id, warehouse_id, movement, quantity_delta, reserved_delta,
                              reservation_id, actor)
    SELECT p_product_id, u.wh, 'reserve', 0, u.q, u.id, p_owners[u.i]
      FROM unnest(res_ids, res_idx, res_wh, res_qty) AS u(id, i, wh, q);

    UPDATE products p SET version = p.version + 1 WHERE p.product_id = p_product_id
    RETURNING p.version INTO v_version;
    SELECT sum(s.quantity), sum(s.reserved) INTO v_qty, v_res FROM stock s WHERE s.product_id = p_product_id;
    v_event_id := gen_random_uuid();
    INSERT INTO outbox (event_id, topic, key, event_type, payload, headers)
    VALUES (
        v_event_id, p_topic, p_product_id::TEXT, 'inventory.stock_level_changed',
        stock_level_changed_event(v_event_id, p_product_id, v_version, now(), v_qty, v_res,
                                  3, 0),  -- STOCK_MOVEMENT_RESERVE
        p_headers || jsonb_build_object('event-id', v_event_id::TEXT,
                                        'event-type', 'inventory.stock_level_changed'));
END;
$$;
