"""Labelled counters that alerts read with increase()/rate() are exported at 0 from the start: a
series born at its first count hides that first jump, so a short outage or the first failures
after a restart never reached the alert."""

from __future__ import annotations

import valkey.asyncio as valkey_asyncio
from prometheus_client import REGISTRY

from gateway.config import Bucket
from gateway.ratelimit import RateLimiter

BUCKET = Bucket(burst=5, per_second=1.0)


def test_checkout_outcomes_exist_before_the_first_checkout() -> None:
    import order_svc.metrics  # noqa: F401  (registers the series)

    for status in ("success", "failed", "duplicate"):
        assert REGISTRY.get_sample_value("orders_total", {"status": status}) is not None, status


def test_rate_limit_series_exist_for_every_class_before_valkey_first_fails() -> None:
    client = valkey_asyncio.Valkey(host="127.0.0.1", port=1)  # never connected: only constructed
    limiter = RateLimiter(client, buckets={"zero-test-class": BUCKET}, default_bucket=BUCKET)
    limiter.close()
    for rate_class in ("zero-test-class", "default"):
        for name in ("gateway_rate_limit_fail_open_total", "gateway_rate_limited_total"):
            assert REGISTRY.get_sample_value(name, {"rate_limit_class": rate_class}) is not None, name
