-- Checkout steps 1 and 4 as one round trip each (order_svc/checkout.py, order_svc/saga.py).
-- Python prices the lines (catalog) and builds the event payloads, the outcome and the audit records
-- beforehand; these functions do the statements the step used to send one by one, in one
-- transaction, under the same locks in the same order (the user's cart row, then the order row).

-- Step 1: the PENDING order with its priced lines, the cart's live reservations tied to it, and
-- order.created in the outbox. `result` is
--   created               done; the order's created_at and the reservations it took are returned
--   exists                the (user, idempotency key) already has an order: nothing written
--   cart_changed          the cart is no longer the one priced (p_products/p_quantities, in cart
--                         order): nothing written, read and price it again
--   reservations_claimed  another open order holds one of the cart's reservations: nothing written
CREATE FUNCTION checkout_create(
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
    -- a reservation belongs to one open order only (every writer of order_reservations holds the
    -- owner's cart lock, so this check cannot race)
    IF EXISTS (SELECT 1 FROM order_reservations r WHERE r.reservation_id = ANY (v_ids)) THEN
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

-- Step 4: PENDING -> PAID with the capture and the stored outcome (lease cleared), the bought units
-- and the order's reservations off the cart, the audit records, order.status_changed in the outbox.
-- False (nothing written) when the order is no longer PENDING at p_version - 1 or a cancel has
-- begun. The audit records were chained by the caller from an empty chain: if the order's chain
-- already has a head, it raises SQLSTATE 'OA001' (everything rolled back) and the caller writes
-- the step the statement-by-statement way, which reads the head.
CREATE FUNCTION checkout_complete(
    p_order_id          UUID,
    p_user_id           TEXT,
    p_version           BIGINT,
    p_updated_at        TIMESTAMPTZ,
    p_payment_reference TEXT,
    p_outcome           BYTEA,
    p_products          BIGINT[],
    p_quantities        INT[],
    p_event_id          UUID,
    p_topic             TEXT,
    p_event_key         TEXT,
    p_event_type        TEXT,
    p_payload           BYTEA,
    p_headers           JSONB,
    p_audit_resource    TEXT,
    p_audit             JSONB
) RETURNS BOOLEAN
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO carts AS c (user_id) VALUES (p_user_id)
        ON CONFLICT (user_id) DO UPDATE SET user_id = EXCLUDED.user_id;
    UPDATE orders o
       SET status = 'paid', version = p_version, updated_at = p_updated_at, payment_status = 'captured',
           payment_reference = p_payment_reference, checkout_outcome = p_outcome, lease_owner = NULL,
           lease_until = NULL
     WHERE o.id = p_order_id AND o.status = 'pending' AND o.transition_to IS NULL
       AND o.version = p_version - 1;
    IF NOT FOUND THEN
        RETURN FALSE;
    END IF;
    INSERT INTO audit_chain_heads (resource, seq, hash)
    VALUES (p_audit_resource, (p_audit -> -1 ->> 'chain_seq')::BIGINT, p_audit -> -1 ->> 'hash')
    ON CONFLICT (resource) DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'audit chain % already has records', p_audit_resource USING ERRCODE = 'OA001';
    END IF;
    INSERT INTO audit_log (occurred_at, service, actor, actor_roles, action, resource, request_id, trace_id,
                           changes, chain_seq, prev_hash, hash)
    SELECT (r ->> 'occurred_at')::TIMESTAMPTZ, r ->> 'service', r ->> 'actor',
           ARRAY(SELECT jsonb_array_elements_text(r -> 'actor_roles')), r ->> 'action', r ->> 'resource',
           r ->> 'request_id', r ->> 'trace_id', r -> 'changes', (r ->> 'chain_seq')::BIGINT,
           r ->> 'prev_hash', r ->> 'hash'
      FROM jsonb_array_elements(p_audit) AS r
     ORDER BY (r ->> 'chain_seq')::BIGINT;
    DELETE FROM cart_reservations cr USING order_reservations r
     WHERE r.order_id = p_order_id AND cr.reservation_id = r.reservation_id;
    -- delete first: a line reduced by the UPDATE must not then match the DELETE
    DELETE FROM cart_items ci USING unnest(p_products, p_quantities) AS t(p, q)
     WHERE ci.user_id = p_user_id AND ci.product_id = t.p AND ci.quantity <= t.q;
    UPDATE cart_items ci SET quantity = ci.quantity - t.q
      FROM unnest(p_products, p_quantities) AS t(p, q)
     WHERE ci.user_id = p_user_id AND ci.product_id = t.p;
    UPDATE carts SET version = version + 1, updated_at = now() WHERE user_id = p_user_id;
    INSERT INTO outbox (event_id, topic, key, event_type, payload, headers)
    VALUES (p_event_id, p_topic, p_event_key, p_event_type, p_payload, p_headers);
    RETURN TRUE;
END
$$;
