-- Step 4 is fenced by the order's lease: checkout_complete takes the driver's lease owner and moves
-- the order only while that driver still holds the lease. Before, a driver that stalled past its
-- lease (a GC pause, a frozen VM, a slow provider with renewals missed) could complete the order
-- after a cancel had taken the lease over and refunded the capture: the cancel's own final move then
-- found the order PAID and gave up, leaving a paid order whose money was refunded. Now the late
-- driver's step 4 changes nothing (Superseded) and the cancel finishes. Otherwise as in 0005.
-- A new overload (one more argument), not a replaced function: the previous version's pods keep
-- calling the 16-argument checkout_complete during a rollout; drop it in a later migration.
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
    p_audit             JSONB,
    p_lease_owner       UUID
) RETURNS BOOLEAN
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO carts AS c (user_id) VALUES (p_user_id)
        ON CONFLICT (user_id) DO UPDATE SET user_id = EXCLUDED.user_id;
    UPDATE orders o
       SET status = 'paid', version = p_version, updated_at = p_updated_at, payment_status = 'captured',
           payment_reference = p_payment_reference, checkout_outcome = p_outcome, lease_owner = NULL,
           lease_until = NULL, stock_committed_at = coalesce(o.stock_committed_at, p_updated_at),
           payment_attempted_at = coalesce(o.payment_attempted_at, p_updated_at)
     WHERE o.id = p_order_id AND o.status = 'pending' AND o.transition_to IS NULL
       AND o.version = p_version - 1 AND o.lease_owner = p_lease_owner;
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
