"""order_svc's own Prometheus metrics (the seed's names); RED per RPC comes from meshkit."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ORDER_VALUE_BUCKETS = (10, 25, 50, 100, 250, 500, 1000, 2500)

orders_total = Counter(
    "orders_total",
    "Checkout outcomes: success (order paid), failed (order failed), duplicate (replayed for a key).",
    ["status"],
)
# every status exported from the start at 0: a series born at its first count hides that first jump
# from increase()/rate(), so HighCheckoutFailureRate missed the first failures after a restart
for _status in ("success", "failed", "duplicate"):
    orders_total.labels(_status)
order_value_dollars = Histogram(
    "order_value_dollars", "Total of paid orders, in dollars.", buckets=ORDER_VALUE_BUCKETS
)
payment_calls_total = Counter(
    "payment_calls_total", "Payment provider calls by operation and outcome.", ["operation", "outcome"]
)
checkout_recoveries_total = Counter(
    "checkout_recoveries_total",
    "Unfinished orders resolved by the recovery job, by outcome (completed/compensated/transition).",
    ["outcome"],
)
orders_unfinished_oldest_seconds = Gauge(
    "orders_unfinished_oldest_seconds",
    "Seconds since the stalest unfinished order (PENDING, or a cancel/refund under way) last changed, "
    "as of the recovery leader's last pass; 0 elsewhere and when there is none. Such an order's user "
    "cannot check out again until it ends.",
)
orders_archived_total = Counter("orders_archived_total", "Orders moved to orders_archive and anonymized.")
order_archives_exported_total = Counter(
    "order_archives_exported_total", "Archived orders written to cold-tier JSON Lines files."
)
order_archives_purged_total = Counter(
    "order_archives_purged_total", "Archived orders deleted after the 7-year retention."
)
cart_cache_requests_total = Counter("cart_cache_requests_total", "Cart reads by cache outcome.", ["outcome"])
