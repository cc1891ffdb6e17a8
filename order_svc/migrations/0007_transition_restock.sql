-- Whether a recorded cancel/refund puts the order's units back into stock. A refund of a SHIPPED or
-- DELIVERED order restocked them too, as if the goods had come back: stock counted units that were
-- with the customer (kept, lost or damaged) and sold them again. Recorded with the intent (like
-- transition_to), so recovery finishing a half-done refund restocks exactly when the request said.
-- TRUE for rows written before: what their (older) intent meant.
ALTER TABLE orders ADD COLUMN transition_restock BOOLEAN NOT NULL DEFAULT TRUE;
