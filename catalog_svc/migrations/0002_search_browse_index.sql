-- The PostgreSQL search fallback's filter index: active products by category, carrying every column
-- the fallback's hit list reads except the text vector. Browsing a category is then an index-only
-- scan instead of a scan of the whole (wide: ~740 bytes a row) products table, and a text query
-- within a category combines it with the GIN index (BitmapAnd) before touching the heap.
-- On a large live table build it by hand first with CREATE INDEX CONCURRENTLY (same name): this
-- migration runs in a transaction and then finds it in place.
CREATE INDEX IF NOT EXISTS idx_products_search_browse
    ON products (category_id) INCLUDE (id, price, brand, rating, review_count)
    WHERE is_active;
