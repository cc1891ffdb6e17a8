"""Prometheus metrics shared by every service: RED per RPC, outbox, consumers, DB pool.

Metric objects live in the default registry (prometheus-client's design); they do no I/O.
Each process serves them over HTTP from `serve_metrics`.
"""

from __future__ import annotations

import logging
import threading
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import MetricsHandler

from meshkit.logs import set_log_level

RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

grpc_server_handled_total = Counter(
    "grpc_server_handled_total",
    "RPCs completed by the server, by method and status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
grpc_server_handling_seconds = Histogram(
    "grpc_server_handling_seconds",
    "RPC handling time on the server.",
    ["grpc_service", "grpc_method"],
    buckets=RPC_BUCKETS,
)
outbox_backlog = Gauge("outbox_backlog", "Outbox rows not yet published to Kafka.", ["service"])
outbox_oldest_age_seconds = Gauge(
    "outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row.", ["service"]
)
outbox_published_total = Counter(
    "outbox_published_total", "Outbox events published to Kafka.", ["service", "topic"]
)
outbox_publish_failures_total = Counter(
    "outbox_publish_failures_total", "Failed attempts to publish an outbox batch.", ["service"]
)
outbox_relay_leader = Gauge(
    "outbox_relay_leader", "1 when this process is the active outbox relay.", ["service"]
)
kafka_consumer_lag = Gauge(
    "kafka_consumer_lag", "Messages behind the log end, per consumer group and topic.", ["group", "topic"]
)
kafka_events_consumed_total = Counter(
    "kafka_events_consumed_total",
    "Events consumed, by outcome (applied/duplicate/ignored: nothing to do for this consumer).",
    ["group", "outcome"],
)
db_pool_saturation = Gauge("db_pool_saturation", "Share of the DB pool in use (0..1).", ["service"])
db_pool_waiting = Gauge("db_pool_waiting", "Requests waiting for a DB connection.", ["service"])
idempotent_replays_total = Counter(
    "idempotent_replays_total", "Requests answered from a stored idempotent response.", ["service", "layer"]
)


class _Handler(MetricsHandler):
    """`/metrics` plus `/debug?level=DEBUG` to change the log level at runtime."""

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/debug":
            level = parse_qs(url.query).get("level", ["DEBUG"])[0].upper()
            if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
                self.send_response(400)
                self.end_headers()
                return
            set_log_level(level)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(f"log level {level}\n".encode())
            return
        if url.path not in ("/metrics", "/"):
            self.send_response(404)
            self.end_headers()
            return
        output = generate_latest()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.end_headers()
        self.wfile.write(output)

    def log_message(self, format: str, *args: object) -> None:
        return


def serve_metrics(host: str, port: int) -> ThreadingHTTPServer:
    """Serve /metrics on a daemon thread; returns the server (its port when `port` is 0)."""
    server = ThreadingHTTPServer((host, port), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    logging.getLogger(__name__).info("metrics listening", extra={"port": server.server_address[1]})
    return server
