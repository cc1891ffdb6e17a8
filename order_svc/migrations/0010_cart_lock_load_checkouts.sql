-- cart_lock_load (0004) plus the products of the user's unfinished checkouts, read after the lock:
-- AddCartItem and UpdateCartItem refuse to reserve more of a product an open checkout is selling,
-- and asked that in a statement of its own (one more round trip on every add to cart). Orders are
-- created under the cart lock (checkout_create), so under it the answer cannot change. A new name:
-- the previous version's pods keep calling cart_lock_load during a rollout.
CREATE FUNCTION cart_lock_load_v2(p_user_id TEXT, p_request_id TEXT, p_with_checkouts BOOLEAN)
RETURNS TABLE (version BIGINT, updated_at TIMESTAMPTZ, fresh BOOLEAN, product_id BIGINT, quantity INT,
               added_at TIMESTAMPTZ, reservation_id UUID, r_quantity INT, expires_at TIMESTAMPTZ, state TEXT,
               checking_out BIGINT[])
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_fresh BOOLEAN := TRUE;
    v_checking_out BIGINT[] := '{}';
BEGIN
    INSERT INTO carts AS c (user_id) VALUES (p_user_id)
        ON CONFLICT ON CONSTRAINT carts_pkey DO UPDATE SET user_id = EXCLUDED.user_id;
    IF p_request_id <> '' THEN
        INSERT INTO cart_requests AS q (user_id, request_id) VALUES (p_user_id, p_request_id)
            ON CONFLICT ON CONSTRAINT cart_requests_pkey DO NOTHING;
        v_fresh := FOUND;
    END IF;
    IF p_with_checkouts THEN
        SELECT coalesce(array_agg(DISTINCT l.product_id), '{}') INTO v_checking_out
          FROM orders o JOIN order_lines l ON l.order_id = o.id
         WHERE o.user_id = p_user_id AND o.status = 'pending';
    END IF;
    RETURN QUERY
    SELECT c.version, c.updated_at, v_fresh, i.product_id, i.quantity, i.added_at, r.reservation_id,
           r.quantity, r.expires_at, r.state, v_checking_out
      FROM carts c LEFT JOIN cart_items i ON i.user_id = c.user_id
      LEFT JOIN cart_reservations r ON r.user_id = i.user_id AND r.product_id = i.product_id
     WHERE c.user_id = p_user_id
     ORDER BY i.position, r.expires_at, r.reservation_id;
END
$$;
