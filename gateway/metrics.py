"""Gateway metrics (default prometheus registry; served at /metrics). Routes are labelled by their
template, never by the raw path, so label cardinality stays bounded."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED_ROUTE = "unmatched"

http_requests_total = Counter(
    "http_requests_total",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
http_request_duration_seconds = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request, by route template and method.",
    ["route", "method"],
    buckets=HTTP_BUCKETS,
)
rate_limit_fail_open_total = Counter(
    "gateway_rate_limit_fail_open_total",
    "Requests let through without a rate-limit decision because Valkey failed.",
    ["rate_limit_class"],
)
rate_limited_total = Counter(
    "gateway_rate_limited_total", "Requests refused with 429 by the token bucket.", ["rate_limit_class"]
)
upstream_errors_total = Counter(
    "gateway_upstream_errors_total",
    "Failed upstream gRPC calls, by service and gRPC code.",
    ["service", "code"],
)
