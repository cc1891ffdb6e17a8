"""inventory_svc metrics under the seed's names."""

from prometheus_client import Counter, Gauge

inventory_reservations_total = Counter(
    "inventory_reservations_total", "Reserve requests by outcome.", ["status"]
)
cart_abandonments_total = Counter(
    "cart_abandonments_total",
    "Reservations expired (abandoned carts): by the expiry job, or by a commit or extend that met them.",
)
inventory_oversell_total = Counter(
    "inventory_oversell_total", "Stock rows found breaking an invariant by the periodic check."
)
reservation_sweeper_lag_seconds = Gauge(
    "reservation_sweeper_lag_seconds", "Age of the oldest reservation past its expiry and not yet released."
)
reservation_sweeper_last_run_timestamp = Gauge(
    "reservation_sweeper_last_run_timestamp_seconds", "When the expiry sweeper last finished a run."
)
reserve_batch_size = Gauge("inventory_reserve_last_batch_size", "Requests in the last reserve batch.")
