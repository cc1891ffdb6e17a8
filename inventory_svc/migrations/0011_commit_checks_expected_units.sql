-- A commit can be told the units its reservations must hold, per product: commit_order_v3 takes
-- them (p_expected_products / p_expected_units, parallel arrays; NULL: no check) and, when the
-- named reservations hold other amounts, commits nothing and answers 'quantity_mismatch' with each
-- reservation as it is. Why: the order service records a reservation's quantity itself, and a
-- partial release inventory applied but whose answer was lost (the cart's transaction then rolled
-- back) left its record saying 5 where inventory held 2; checkout committed the reservation by
-- id and sold 2 units for an order of 5. Checked under the reservations' row locks, so nothing can
-- change them between the check and the sale.
--
-- A new function beside commit_order_v2 (0008), which the previous version's pods keep calling
-- during a rollout; its body is v2's with the check added after the active check.

CREATE FUNCTION commit_order_v3(
    p_order_id          TEXT,
    p_reservation_ids   UUID[],
    p_actor             TEXT,
    p_topic             TEXT,
    p_headers           JSONB,
    p_expected_products BIGINT[],  -- NULL: no check
    p_expected_units    INT[]
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
    IF v_refused IS NULL AND p_expected_products IS NOT NULL AND EXISTS (
        SELECT 1
          FROM (SELECT r.product_id, sum(r.quantity) AS units FROM reservations r
                 WHERE r.id = ANY(p_reservation_ids) GROUP BY r.product_id) AS held
          FULL JOIN unnest(p_expected_products, p_expected_units) AS e(product_id, units)
            ON held.product_id = e.product_id
         WHERE held.units IS DISTINCT FROM e.units
    ) THEN
        DELETE FROM order_commits oc WHERE oc.order_id = p_order_id;
        RETURN QUERY SELECT 'quantity_mismatch'::TEXT, r.id, r.owner, r.product_id, r.warehouse_id,
                            r.quantity, r.status, r.expires_at, r.order_id
                       FROM reservations r WHERE r.id = ANY(p_reservation_ids)
                      ORDER BY r.product_id, r.warehouse_id, r.id;
        RETURN;
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
