-- A restock puts sold units back. A product's total is int32 in ProductStock and the events (and each
-- warehouse row is INT): a restock after receipts had brought it near 2^31-1 raised 'integer out of
-- range' from the row (an INTERNAL, the cancel retried for ever) or, spread over warehouses, went past
-- the total, after which every GetStock of the product failed. restock_order_v2 runs restock_order and
-- refuses such a result: the whole statement rolls back and the caller gets
-- numeric_value_out_of_range, which the service answers FAILED_PRECONDITION STOCK_LIMIT_EXCEEDED. A
-- new function: the previous version's pods keep calling restock_order.
CREATE FUNCTION restock_order_v2(p_order_id TEXT, p_reason TEXT, p_actor TEXT, p_topic TEXT, p_headers JSONB)
RETURNS TABLE (outcome TEXT, quantity INT)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    RETURN QUERY SELECT * FROM restock_order(p_order_id, p_reason, p_actor, p_topic, p_headers);
    IF EXISTS (
        SELECT 1 FROM stock s
         WHERE s.product_id IN (SELECT r.product_id FROM reservations r
                                 WHERE r.order_id = p_order_id AND r.status = 'committed')
         GROUP BY s.product_id HAVING sum(s.quantity) > 2147483647) THEN
        RAISE EXCEPTION 'restock of order % would take a product past 2147483647 units', p_order_id
            USING ERRCODE = 'numeric_value_out_of_range';
    END IF;
END;
$$;
