-- The read half of a cart change (order_svc/cart_store.py lock_and_load) as one statement: lock the
-- user's cart row (creating it if needed), claim the AddCartItem request id if one is given, then
-- read the cart. Each statement of a function takes its own snapshot, so the read after the lock
-- wait sees what the previous holder committed. One row per reservation (reservation columns NULL
-- for a line without any, line columns NULL for a cart without lines), every row carrying the
-- cart's version and whether the request id was new (true when none was given).
CREATE FUNCTION cart_lock_load(p_user_id TEXT, p_request_id TEXT)
RETURNS TABLE (version BIGINT, updated_at TIMESTAMPTZ, fresh BOOLEAN, product_id BIGINT, quantity INT,
               added_at TIMESTAMPTZ, reservation_id UUID, r_quantity INT, expires_at TIMESTAMPTZ, state TEXT)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_fresh BOOLEAN := TRUE;
BEGIN
    INSERT INTO carts AS c (user_id) VALUES (p_user_id)
        ON CONFLICT ON CONSTRAINT carts_pkey DO UPDATE SET user_id = EXCLUDED.user_id;
    IF p_request_id <> '' THEN
        INSERT INTO cart_requests AS q (user_id, request_id) VALUES (p_user_id, p_request_id)
            ON CONFLICT ON CONSTRAINT cart_requests_pkey DO NOTHING;
        v_fresh := FOUND;
    END IF;
    RETURN QUERY
    SELECT c.version, c.updated_at, v_fresh, i.product_id, i.quantity, i.added_at, r.reservation_id,
           r.quantity, r.expires_at, r.state
      FROM carts c LEFT JOIN cart_items i ON i.user_id = c.user_id
      LEFT JOIN cart_reservations r ON r.user_id = i.user_id AND r.product_id = i.product_id
     WHERE c.user_id = p_user_id
     ORDER BY i.position, r.expires_at, r.reservation_id;
END
$$;
