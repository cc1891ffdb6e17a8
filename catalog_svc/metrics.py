"""catalog_svc metrics: the seed's search latency histogram plus cache, index sync and recs counters.

circuit_breaker_state{service="opensearch"} comes from meshkit.circuit.
"""

from prometheus_client import Counter, Gauge, Histogram

SEARCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)  # the seed's

search_latency_seconds = Histogram(
    "search_latency_seconds",
    "Search latency by query type (text/browse) and engine (opensearch/postgres).",
    ["query_type", "engine"],
    buckets=SEARCH_BUCKETS,
)
search_fallbacks_total = Counter(
    "search_fallbacks_total", "Searches answered by PostgreSQL, by why (breaker_open/error).", ["reason"]
)
search_log_dropped_total = Counter(
    "search_log_dropped_total", "Search log entries dropped because the write queue was full."
)
product_cache_requests_total = Counter(
    "product_cache_requests_total", "Product cache lookups by result (hit/miss/error/skipped).", ["result"]
)
index_sync_documents_total = Counter(
    "index_sync_documents_total", "Search documents written by the sync loop, by outcome.", ["outcome"]
)
index_dirty_backlog = Gauge(
    "index_dirty_backlog", "Products waiting for their search document to be rewritten."
)
search_documents_without_price_cents = Gauge(
    "search_documents_without_price_cents",
    "Search documents written before price_cents existed; price filters use the float price "
    "until this is 0 (reconcile rewrites them).",
)
index_events_total = Counter(
    "index_events_total",
    "Indexer events by topic kind and outcome (applied/stale/ignored).",
    ["kind", "outcome"],
)
reconcile_repairs_total = Counter(
    "search_reconcile_repairs_total", "Drift repaired by the reconcile job, by kind.", ["kind"]
)
recommendations_computed_total = Counter(
    "recommendations_computed_total", "Products whose also-bought list was recomputed."
)
also_bought_requests_total = Counter(
    "also_bought_requests_total", "Also-bought answers by source.", ["source"]
)
