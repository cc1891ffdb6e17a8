-- reserve_batch must not depend on the caller's search_path (pgbench, psql, other pools).
ALTER FUNCTION reserve_batch(BIGINT, TEXT[], INT[], DOUBLE PRECISION[], TEXT[], TEXT, JSONB)
    SET search_path FROM CURRENT;
