-- A reservation's expires_at is its deadline, whether or not the sweeper has run yet. commit_order
-- sold and extend_reservations revived an 'active' reservation whose expiry had passed but that the
-- sweeper (every few seconds) had not reached: whether a late checkout succeeded depended on the
-- sweeper's timing. The _v2 functions treat it as lapsed: commit refuses it as 'not_active' (the
-- service then expires it on the spot, so its units are free for a re-reserve) and extend leaves it
-- as it is (the service expires it in the same transaction first).
--
-- New functions, not replaced in place: during a rollout the previous version's pods keep calling
-- commit_order and extend_reservations, and with the new rule but without the expiry that goes
-- with it their extend would answer a lapsed reservation as ACTIVE and their commit refuse it,
-- and the checkout saga would retry that commit until it gave up. Same signatures and results.

CREATE FUNCTION commit_order_v2(
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
          FROM reservations r WHERE r.id = ANY(p_reservation_ids)
           AND (r.status <> 'active' OR r.expires_at < now());
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

CREATE FUNCTION extend_reservations_v2(p_reservation_ids UUID[], p_ttl_seconds DOUBLE PRECISION)
RETURNS TABLE (id UUID, owner VARCHAR, product_id BIGINT, warehouse_id BIGINT, quantity INT,
               status TEXT, expires_at TIMESTAMPTZ, order_id TEXT)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
BEGIN
    UPDATE reservations r
       SET expires_at = greatest(r.expires_at, now() + make_interval(secs => p_ttl_seconds)),
           updated_at = now()
     WHERE r.id = ANY(p_reservation_ids) AND r.status = 'active' AND r.expires_at >= now();
    RETURN QUERY SELECT r.id, r.owner, r.product_id, r.warehouse_id, r.quantity, r.status,
                        r.expires_at, r.order_id
                   FROM reservations r WHERE r.id = ANY(p_reservation_ids);
END;
$$;
