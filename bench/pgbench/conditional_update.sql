-- (a) the database's limit on one hot SKU: one conditional UPDATE per transaction (autocommit).
UPDATE bench.stock SET reserved = reserved + 1
 WHERE product_id = 1 AND warehouse_id = 1 AND quantity - reserved >= 1
RETURNING reserved;
