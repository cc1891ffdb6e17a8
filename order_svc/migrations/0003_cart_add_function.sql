-- The write half of an add to cart (order_svc/cart.py add_item) as one round trip: the line's new
-- quantity, the reservations inventory just made for it, the cart's version bump, and the line read
-- back (the rows load_cart gives for it). The caller holds the cart row lock (same transaction).
CREATE FUNCTION cart_add_apply(
    p_user_id        TEXT,
    p_product_id     BIGINT,
    p_quantity       INT,
    p_res_ids        UUID[],
    p_res_quantities INT[],
    p_res_expires    TIMESTAMPTZ[]
) RETURNS TABLE (version BIGINT, updated_at TIMESTAMPTZ, product_id BIGINT, quantity INT, added_at TIMESTAMPTZ,
                 reservation_id UUID, r_quantity INT, expires_at TIMESTAMPTZ, state TEXT)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO cart_items AS ci (user_id, product_id, quantity) VALUES (p_user_id, p_product_id, p_quantity)
        ON CONFLICT ON CONSTRAINT cart_items_pkey DO UPDATE SET quantity = EXCLUDED.quantity;
    INSERT INTO cart_reservations AS cr (reservation_id, user_id, product_id, quantity, expires_at)
    SELECT t.r, p_user_id, p_product_id, t.q, t.e FROM unnest(p_res_ids, p_res_quantities, p_res_expires) AS t(r, q, e)
        ON CONFLICT ON CONSTRAINT cart_reservations_pkey DO UPDATE
        SET quantity = EXCLUDED.quantity, expires_at = EXCLUDED.expires_at, state = 'active';
    UPDATE carts c SET version = c.version + 1, updated_at = now() WHERE c.user_id = p_user_id;
    RETURN QUERY
    SELECT c.version, c.updated_at, i.product_id, i.quantity, i.added_at, r.reservation_id, r.quantity,
           r.expires_at, r.state
      FROM carts c JOIN cart_items i ON i.user_id = c.user_id AND i.product_id = p_product_id
      LEFT JOIN cart_reservations r ON r.user_id = i.user_id AND r.product_id = i.product_id
     WHERE c.user_id = p_user_id
     ORDER BY r.expires_at, r.reservation_id;
END
$$;
