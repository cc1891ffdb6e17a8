"""Build observability/dashboards/shopmesh.json, the Grafana dashboard (`python -m observability.dashboard`).

The panels are listed here as data, one line per query, so a review reads the PromQL rather than
Grafana's JSON; the JSON is written from them (`--check` exits 1 when the committed file is stale).
tests/observability/test_dashboard.py checks that every query names a metric and labels the code
exports, and that checkout, inventory, search and Kafka each have their row.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards" / "shopmesh.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
BAD_CODES = "INTERNAL|UNAVAILABLE|DEADLINE_EXCEEDED|UNKNOWN|DATA_LOSS"


@dataclasses.dataclass(frozen=True)
class Panel:
    title: str
    targets: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    description: str = ""
    thresholds: tuple[float, ...] = ()  # values that turn the panel amber, then red
    width: int = 8


def q(expr: str, legend: str = "") -> tuple[str, str]:
    return (expr, legend)


ROWS: list[tuple[str, list[Panel]]] = [
    (
        "Checkout",
        [
            Panel(
                "Checkouts by outcome",
                (q(f"sum by (status) (rate(orders_total[{RATE}]))", "{{status}}"),),
                unit="ops",
                description="orders_total: success (paid), failed, duplicate (replayed for an idempotency key).",
            ),
            Panel(
                "Checkout failure ratio (alert: > 5% for 2m)",
                (
                    q(
                        f'sum(rate(orders_total{{status="failed"}}[{RATE}]))'
                        f' / sum(rate(orders_total{{status=~"success|failed"}}[{RATE}]))',
                        "failed / (success + failed)",
                    ),
                ),
                unit="percentunit",
                thresholds=(0.02, 0.05),
            ),
            Panel(
                "Order value (paid orders)",
                (
                    q(
                        f"histogram_quantile(0.5, sum by (le) (rate(order_value_dollars_bucket[{RATE}])))",
                        "p50",
                    ),
                    q(
                        f"histogram_quantile(0.95, sum by (le) (rate(order_value_dollars_bucket[{RATE}])))",
                        "p95",
                    ),
                ),
                unit="currencyUSD",
            ),
            Panel(
                "Checkout SLO: server-side error ratio (budget 0.1%)",
                (
                    q("shopmesh:checkout_errors:ratio_rate5m", "5m"),
                    q("shopmesh:checkout_errors:ratio_rate1h", "1h"),
                    q("shopmesh:checkout_errors:ratio_rate6h", "6h"),
                    q("shopmesh:checkout_errors:ratio_rate3d", "3d"),
                ),
                unit="percentunit",
                thresholds=(0.001, 0.0144),
                description="Recording rules of observability/alerts.yml; 1.44% sustained over 1h pages.",
            ),
            Panel(
                "Checkout RPC latency",
                (
                    q(
                        "histogram_quantile(0.5, sum by (le) (rate(grpc_server_handling_seconds_bucket"
                        f'{{grpc_service="shop.order.v1.OrderService",grpc_method="Checkout"}}[{RATE}])))',
                        "p50",
                    ),
                    q(
                        "histogram_quantile(0.99, sum by (le) (rate(grpc_server_handling_seconds_bucket"
                        f'{{grpc_service="shop.order.v1.OrderService",grpc_method="Checkout"}}[{RATE}])))',
                        "p99",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Idempotent replays and payment calls",
                (
                    q(
                        f"sum by (service, layer) (rate(idempotent_replays_total[{RATE}]))",
                        "replay {{service}}/{{layer}}",
                    ),
                    q(
                        f"sum by (operation, outcome) (rate(payment_calls_total[{RATE}]))",
                        "payment {{operation}} {{outcome}}",
                    ),
                ),
                unit="ops",
            ),
        ],
    ),
    (
        "Inventory",
        [
            Panel(
                "Reservations by outcome",
                (q(f"sum by (status) (rate(inventory_reservations_total[{RATE}]))", "{{status}}"),),
                unit="ops",
            ),
            Panel(
                "Oversell / invariant violations (last 1h; alert on any increase)",
                (q("sum(increase(inventory_oversell_total[1h]))", "violations"),),
                kind="stat",
                thresholds=(0.5, 1),
            ),
            Panel(
                "Cart abandonments (reservations expired by the sweeper)",
                (q(f"sum(rate(cart_abandonments_total[{RATE}]))", "released"),),
                unit="ops",
            ),
            Panel(
                "Reservation sweeper",
                (
                    q("max(reservation_sweeper_lag_seconds)", "oldest overdue reservation"),
                    q(
                        "max(time() - reservation_sweeper_last_run_timestamp_seconds)",
                        "since last finished run",
                    ),
                ),
                unit="s",
                thresholds=(120, 300),
            ),
            Panel(
                "Inventory RPCs by code",
                (
                    q(
                        'sum by (grpc_method, grpc_code) (rate(grpc_server_handled_total{grpc_service="shop.inventory.v1.InventoryService"}'
                        f"[{RATE}]))",
                        "{{grpc_method}} {{grpc_code}}",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "Reserve group-commit batch size",
                (q("max(inventory_reserve_last_batch_size)", "last batch"),),
            ),
        ],
    ),
    (
        "Search",
        [
            Panel(
                "Search latency by engine (alert: p99 > 300ms for 5m)",
                (
                    q(
                        f"histogram_quantile(0.99, sum by (le, engine) (rate(search_latency_seconds_bucket[{RATE}])))",
                        "p99 {{engine}}",
                    ),
                    q(
                        f"histogram_quantile(0.5, sum by (le, engine) (rate(search_latency_seconds_bucket[{RATE}])))",
                        "p50 {{engine}}",
                    ),
                ),
                unit="s",
                thresholds=(0.2, 0.3),
            ),
            Panel(
                "Searches by engine and query type",
                (
                    q(
                        f"sum by (engine, query_type) (rate(search_latency_seconds_count[{RATE}]))",
                        "{{engine}} {{query_type}}",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "OpenSearch circuit breaker (0 closed, 1 half-open, 2 open)",
                (
                    q('max(circuit_breaker_state{service="opensearch"})', "state"),
                    q(f"sum by (reason) (rate(search_fallbacks_total[{RATE}]))", "fallback {{reason}}"),
                ),
                thresholds=(1, 2),
            ),
            Panel(
                "Browse SLO: server-side error ratio (budget 0.01%)",
                (
                    q("shopmesh:browse_errors:ratio_rate5m", "5m"),
                    q("shopmesh:browse_errors:ratio_rate1h", "1h"),
                    q("shopmesh:browse_errors:ratio_rate6h", "6h"),
                    q("shopmesh:browse_errors:ratio_rate3d", "3d"),
                ),
                unit="percentunit",
                thresholds=(0.0001, 0.00144),
            ),
            Panel(
                "Search index sync",
                (
                    q("max(index_dirty_backlog)", "products awaiting reindex"),
                    q(
                        f"sum by (outcome) (rate(index_sync_documents_total[{RATE}]))",
                        "documents {{outcome}}",
                    ),
                ),
            ),
            Panel(
                "Product cache",
                (q(f"sum by (result) (rate(product_cache_requests_total[{RATE}]))", "{{result}}"),),
                unit="ops",
            ),
        ],
    ),
    (
        "Kafka and outbox",
        [
            Panel(
                "Consumer lag by group and topic (alert: > 1000 for 10m)",
                (q("sum by (group, topic) (kafka_consumer_lag)", "{{group}} / {{topic}}"),),
                thresholds=(500, 1000),
            ),
            Panel(
                "Events consumed by outcome",
                (
                    q(
                        f"sum by (group, outcome) (rate(kafka_events_consumed_total[{RATE}]))",
                        "{{group}} {{outcome}}",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "Outbox: oldest unpublished event (alert: > 60s for 5m)",
                (q("max by (service) (outbox_oldest_age_seconds)", "{{service}}"),),
                unit="s",
                thresholds=(30, 60),
            ),
            Panel(
                "Outbox backlog",
                (q("max by (service) (outbox_backlog)", "{{service}}"),),
            ),
            Panel(
                "Outbox published and failed batches",
                (
                    q(
                        f"sum by (service, topic) (rate(outbox_published_total[{RATE}]))",
                        "{{service}} -> {{topic}}",
                    ),
                    q(
                        f"sum by (service) (rate(outbox_publish_failures_total[{RATE}]))",
                        "{{service}} failures",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "Outbox relay leaders (expect 1 per service)",
                (q("sum by (service) (outbox_relay_leader)", "{{service}}"),),
            ),
        ],
    ),
    (
        "RPCs, gateway and database",
        [
            Panel(
                "gRPC requests by service",
                (q(f"sum by (grpc_service) (rate(grpc_server_handled_total[{RATE}]))", "{{grpc_service}}"),),
                unit="ops",
            ),
            Panel(
                "gRPC server-side errors by method",
                (
                    q(
                        f'sum by (grpc_service, grpc_method, grpc_code) (rate(grpc_server_handled_total{{grpc_code=~"{BAD_CODES}"}}[{RATE}]))',
                        "{{grpc_method}} {{grpc_code}}",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "gRPC p99 latency by method",
                (
                    q(
                        f"histogram_quantile(0.99, sum by (le, grpc_method) (rate(grpc_server_handling_seconds_bucket[{RATE}])))",
                        "{{grpc_method}}",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Gateway requests by status",
                (q(f"sum by (status) (rate(http_requests_total[{RATE}]))", "{{status}}"),),
                unit="ops",
            ),
            Panel(
                "Gateway p99 latency by route",
                (
                    q(
                        f"histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket[{RATE}])))",
                        "{{route}}",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Gateway rate limiting",
                (
                    q(
                        f"sum by (rate_limit_class) (rate(gateway_rate_limited_total[{RATE}]))",
                        "429 {{rate_limit_class}}",
                    ),
                    q(
                        f"sum by (rate_limit_class) (rate(gateway_rate_limit_fail_open_total[{RATE}]))",
                        "fail-open {{rate_limit_class}}",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "DB pool saturation",
                (q("max by (service) (db_pool_saturation)", "{{service}}"),),
                unit="percentunit",
                thresholds=(0.7, 0.9),
            ),
            Panel(
                "DB pool waiters",
                (q("max by (service) (db_pool_waiting)", "{{service}}"),),
            ),
        ],
    ),
]


def _thresholds(values: tuple[float, ...]) -> dict:
    steps = [{"color": "green", "value": None}]
    steps += [{"color": color, "value": v} for color, v in zip(("orange", "red"), values, strict=False)]
    return {"mode": "absolute", "steps": steps}


def build() -> dict:
    panels: list[dict] = []
    next_id = 1
    y = 0
    for title, row_panels in ROWS:
        panels.append({"type": "row", "id": next_id, "title": title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})  # fmt: skip
        next_id += 1
        y += 1
        x = 0
        for panel in row_panels:
            if x + panel.width > 24:
                x, y = 0, y + 8
            panels.append(
                {
                    "type": panel.kind,
                    "id": next_id,
                    "title": panel.title,
                    "description": panel.description,
                    "datasource": DATASOURCE,
                    "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
                    "fieldConfig": {
                        "defaults": {"unit": panel.unit, "thresholds": _thresholds(panel.thresholds)},
                        "overrides": [],
                    },
                    "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
                    "targets": [
                        {
                            "refId": chr(ord("A") + i),
                            "datasource": DATASOURCE,
                            "expr": expr,
                            "legendFormat": legend,
                        }
                        for i, (expr, legend) in enumerate(panel.targets)
                    ],
                }
            )
            next_id += 1
            x += panel.width
        y += 8
    return {
        "title": "Shopmesh",
        "uid": "shopmesh-overview",
        "tags": ["shopmesh"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON is stale")
    args = parser.parse_args(argv)
    wanted = render()
    current = OUT.read_text() if OUT.exists() else ""
    if args.check:
        if current != wanted:
            print(f"{OUT.name} is stale: run python -m observability.dashboard")
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    if current != wanted:
        OUT.write_text(wanted)
        print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
