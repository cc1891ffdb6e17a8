-- The inventory version at which in_stock last changed. A search document depends on in_stock, not
-- on the available count, so a stock event that leaves in_stock as it was updates stock_status but
-- does not rewrite the document: the document's inventory_version is this column, not `version`.
-- (Under checkout load every sale was two stock events per product and two document rewrites,
-- about as much OpenSearch CPU per checkout as catalog_svc itself used.)
ALTER TABLE stock_status ADD COLUMN in_stock_version BIGINT;
UPDATE stock_status SET in_stock_version = version;
ALTER TABLE stock_status ALTER COLUMN in_stock_version SET NOT NULL;
ALTER TABLE stock_status ALTER COLUMN in_stock_version SET DEFAULT 0;
