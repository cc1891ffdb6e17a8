-- Archival takes FAILED orders too (model.ARCHIVABLE): declined and abandoned checkouts hold the same
-- addresses and notes as the others and stayed in the live table unanonymized for ever. The
-- candidates index's predicate must include them, or the monthly batch query cannot use it and
-- scans the table. On a large live table build it by hand first with CREATE INDEX CONCURRENTLY (same
-- name): this migration runs in a transaction and then finds it in place.
CREATE INDEX IF NOT EXISTS orders_archive_candidates_v2 ON orders (created_at, id)
    WHERE archived_at IS NULL AND status IN ('delivered', 'cancelled', 'refunded', 'failed');
DROP INDEX IF EXISTS orders_archive_candidates;
