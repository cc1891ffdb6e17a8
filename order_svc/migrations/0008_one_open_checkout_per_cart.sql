-- checkout_create (0002) refuses a second checkout of a cart while one is open, whatever the cart
-- holds. It refused only when the cart's *active* reservations were claimed by an open order: a
-- cart whose reservations had all lapsed (left alone past their TTL) claims none, so two checkouts
-- of it with different keys (a double click, a second tab, a retry with a fresh key) both passed,
-- both reserved the lines again in step 2 and both charged. Now a user with a PENDING order gets
-- 'reservations_claimed' (the client's ABORTED "another checkout of this cart is in progress"),
-- the answer the previous version's pods already give for it. Same signature: the previous
-- version's pods get the stricter check too.
CREATE INDEX IF NOT EXISTS orders_pending_user ON orders (user_id) WHERE status = 'pending';

CREATE OR REPLACE FUNCTION checkout_create(
    p_order_id        UUID,
    p_user_id         TEXT,
    p_idempotency_key TEXT,
    p_request_hash    TEXT,
    p_total           NUMERIC,
    p_shipping        JSONB,
    p_billing         JSONB,
    p_notes           TEXT,
    p_provider        TEXT,
    p_lease_owner     UUID,
    p_lease_seconds   DOUBLE PRECISION,
    p_products        BIGINT[],
    p_titles          TEXT[],
    p_prices          NUMERIC[],
    p_quantities      INT[],
    p_event_id        UUID,
    p_topic           TEXT,
    p_event_key       TEXT,
    p_event_type      TEXT,
    p_payload         BYTEA,
    p_headers         JSONB
) RETURNS TABLE (result TEXT, order_created_at TIMESTAMPTZ, res_ids UUID[], res_products BIGINT[],
                 res_quantities INT[])
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_products   BIGINT[];
    v_quantities INT[];
    v_created    TIMESTAMPTZ;
    v_ids        UUID[];
    v_res_prod   BIGINT[];
    v_res_qty    INT[];
BEGIN
    -- the cart row lock serializes this user's cart changes and checkouts (cart_store.lock_cart)
    INSERT INTO carts AS c (user_id) VALUES (p_user_id)
        ON CONFLICT (user_id) DO UPDATE SET user_id = EXCLUDED.user_id;
    IF EXISTS (SELECT 1 FROM orders o WHERE o.user_id = p_user_id AND o.idempotency_key = p_idempotency_key) THEN
        RETURN QUERY SELECT 'exists'::TEXT, NULL::TIMESTAMPTZ, NULL::UUID[], NULL::BIGINT[], NULL::INT[];
        RETURN;
    END IF;
    SELECT array_agg(ci.product_id ORDER BY ci.position), array_agg(ci.quantity ORDER BY ci.position)
      INTO v_products, v_quantities
      FROM cart_items ci WHERE ci.user_id = p_user_id;
    IF v_products IS DISTINCT FROM p_products OR v_quantities IS DISTINCT FROM p_quantities THEN
        RETURN QUERY SELECT 'cart_changed'::TEXT, NULL::TIMESTAMPTZ, NULL::UUID[], NULL::BIGINT[], NULL::INT[];
        RETURN;
    END IF;
    SELECT coalesce(array_agg(cr.reservation_id ORDER BY cr.product_id, cr.reservation_id), '{}'),
           coalesce(array_agg(cr.product_id ORDER BY cr.product_id, cr.reservation_id), '{}'),
           coalesce(array_agg(cr.quantity ORDER BY cr.product_id, cr.reservation_id), '{}')
      INTO v_ids, v_res_prod, v_res_qty
      FROM cart_reservations cr WHERE cr.user_id = p_user_id AND cr.state = 'active';
    -- one open checkout of the cart at a time: a reservation belongs to one open order only, and
    -- the user has no other PENDING order (every writer of order_reservations and every new order
    -- holds the owner's cart lock, so this check cannot race)
    IF EXISTS (SELECT 1 FROM order_reservations r WHERE r.reservation_id = ANY (v_ids))
       OR EXISTS (SELECT 1 FROM orders o WHERE o.user_id = p_user_id AND o.status = 'pending') THEN
        RETURN QUERY SELECT 'reservations_claimed'::TEXT, NULL::TIMESTAMPTZ, NULL::UUID[], NULL::BIGINT[],
                            NULL::INT[];
        RETURN;
    END IF;
    INSERT INTO orders (id, user_id, total, shipping_address, billing_address, notes, idempotency_key,
                        request_hash, payment_provider, lease_owner, lease_until)
    VALUES (p_order_id, p_user_id, p_total, p_shipping, p_billing, p_notes, p_idempotency_key,
            p_request_hash, p_provider, p_lease_owner, now() + make_interval(secs => p_lease_seconds))
    ON CONFLICT (user_id, idempotency_key) DO NOTHING
    RETURNING orders.created_at INTO v_created;
    IF v_created IS NULL THEN
        RETURN QUERY SELECT 'exists'::TEXT, NULL::TIMESTAMPTZ, NULL::UUID[], NULL::BIGINT[], NULL::INT[];
        RETURN;
    END IF;
    INSERT INTO order_lines (order_id, position, product_id, title, unit_price, quantity)
    SELECT p_order_id, l.n - 1, l.p, l.t, l.u, l.q
      FROM unnest(p_products, p_titles, p_prices, p_quantities) WITH ORDINALITY AS l(p, t, u, q, n);
    INSERT INTO order_reservations (reservation_id, order_id, product_id, quantity)
    SELECT r.i, p_order_id, r.p, r.q FROM unnest(v_ids, v_res_prod, v_res_qty) AS r(i, p, q);
    INSERT INTO outbox (event_id, topic, key, event_type, payload, headers)
    VALUES (p_event_id, p_topic, p_event_key, p_event_type, p_payload, p_headers);
    RETURN QUERY SELECT 'created'::TEXT, v_created, v_ids, v_res_prod, v_res_qty;
END
$$;
