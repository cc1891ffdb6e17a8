"""order_svc, catalog_svc and the gateway serve their required series, and each moves with its action.

The whole mesh runs on this directory's private database (conftest.py) and is driven through the
real gateway over HTTP, so the gateway's series move along with the services'.
"""

from __future__ import annotations

import asyncio
import socket
import uuid

from kafka import KafkaProducer
from shop.events.v1 import events_pb2

from meshkit.kafka import ensure_topics
from tests.integration.order_helpers import sql
from tests.observability.scrape import Samples, scrape, wait_for
from tests.observability.shop import Shop

ORDER = {"grpc_service": "shop.order.v1.OrderService", "grpc_method": "Checkout"}
SERVER_SIDE = ("INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED", "UNKNOWN", "DATA_LOSS")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gateway_metrics(shop: Shop) -> str:
    return f"{shop.mesh.gateway_url}/metrics"


def server_side_errors(samples: Samples, **labels: str) -> float:
    return sum(samples.value("grpc_server_handled_total", **labels, grpc_code=code) for code in SERVER_SIDE)


async def test_checkout_outcomes_move_order_metrics(shop: Shop) -> None:
    url = shop.mesh.metrics_url("order_svc")
    product = await shop.new_product()
    before = await scrape(url)

    buyer = await shop.shopper_with_cart(product)
    key = str(uuid.uuid4())
    paid = await shop.checkout(buyer, key=key)
    assert paid.status_code == 201, paid.text
    replay = await shop.checkout(buyer, key=key)
    assert replay.status_code == 201 and replay.json() == paid.json(), replay.text
    declined_buyer = await shop.shopper_with_cart(product)
    declined = await shop.checkout(declined_buyer, key=str(uuid.uuid4()), token="tok_decline")
    assert 400 <= declined.status_code < 500, declined.text

    after = await wait_for(
        url,
        lambda s: s.value("orders_total", status="failed") > before.value("orders_total", status="failed"),
    )

    def delta(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert delta("orders_total", status="success") == 1
    assert delta("orders_total", status="duplicate") == 1
    assert delta("orders_total", status="failed") == 1
    # the paid order is $19.99: counted in the 25 bucket, not in the 10 one
    assert delta("order_value_dollars_count") == 1
    assert delta("order_value_dollars_bucket", le="25.0") == 1
    assert delta("order_value_dollars_bucket", le="10.0") == 0
    assert delta("idempotent_replays_total", service="order_svc") >= 1
    # RED: three Checkout RPCs answered, none with a server-side code (a decline is the client's)
    assert delta("grpc_server_handling_seconds_count", **ORDER) == 3
    assert delta("grpc_server_handled_total", **ORDER) == 3
    assert server_side_errors(after, **ORDER) - server_side_errors(before, **ORDER) == 0


async def test_consumers_report_consumed_events_and_lag(shop: Shop) -> None:
    inventory_topic = shop.mesh.topics["SHOPMESH_TOPIC_INVENTORY_EVENTS"]
    catalog_topic = shop.mesh.topics["SHOPMESH_TOPIC_CATALOG_EVENTS"]
    order_group = f"order_svc.{inventory_topic}"
    indexer_group = shop.service_env["catalog_svc"]["SHOPMESH_INDEXER_GROUP"]
    order_url, catalog_url = shop.mesh.metrics_url("order_svc"), shop.mesh.metrics_url("catalog_svc")
    order_before, catalog_before = await scrape(order_url), await scrape(catalog_url)

    product = await shop.new_product()  # a catalog event and an inventory stock event
    await shop.shopper_with_cart(product)  # a reservation: another inventory event

    order_after = await wait_for(
        order_url,
        lambda s: (
            s.value("kafka_events_consumed_total", group=order_group)
            > order_before.value("kafka_events_consumed_total", group=order_group)
            and s.get("kafka_consumer_lag", group=order_group, topic=inventory_topic) == 0
        ),
    )
    # stock changes are nothing to order_svc's expiry consumer: counted ignored, no transaction
    assert order_after.value("kafka_events_consumed_total", group=order_group, outcome="ignored") > (
        order_before.value("kafka_events_consumed_total", group=order_group, outcome="ignored")
    )
    assert order_after.get("kafka_consumer_lag", group=order_group, topic=inventory_topic) == 0
    catalog_after = await wait_for(
        catalog_url,
        lambda s: (
            s.value("kafka_events_consumed_total", group=indexer_group)
            > catalog_before.value("kafka_events_consumed_total", group=indexer_group)
            and s.get("kafka_consumer_lag", group=indexer_group, topic=catalog_topic) is not None
        ),
    )
    assert catalog_after.value("kafka_events_consumed_total", group=indexer_group) > catalog_before.value(
        "kafka_events_consumed_total", group=indexer_group
    )
    assert catalog_after.get("kafka_consumer_lag", group=indexer_group, topic=catalog_topic) is not None


async def test_search_latency_per_engine_and_the_breaker_gauge_move(shop: Shop) -> None:
    url = shop.mesh.metrics_url("catalog_svc")
    before = await scrape(url)
    reply = await shop.client.get("/v1/products:search", params={"q": "widget"})
    assert reply.status_code == 200, reply.text
    after = await wait_for(
        url,
        lambda s: (
            s.value("search_latency_seconds_count", engine="opensearch")
            > before.value("search_latency_seconds_count", engine="opensearch")
        ),
    )
    assert (
        after.value("search_latency_seconds_count", engine="opensearch")
        - before.value("search_latency_seconds_count", engine="opensearch")
        == 1
    )
    assert after.get("circuit_breaker_state", service="opensearch") == 0

    await shop.restart("catalog_svc", SHOPMESH_OPENSEARCH_URL=f"http://127.0.0.1:{closed_port()}")
    try:
        for _ in range(4):  # 3 failures open the breaker; the 4th is refused without a call
            reply = await shop.client.get("/v1/products:search", params={"q": "widget"})
            assert reply.status_code == 200, reply.text  # answered by the PostgreSQL fallback
        broken = await scrape(url)
        assert broken.get("circuit_breaker_state", service="opensearch") == 2
        assert broken.value("search_latency_seconds_count", engine="postgres") == 4
        assert broken.value("search_latency_seconds_count", engine="opensearch") == 0
        assert broken.value("search_fallbacks_total") == 4
    finally:
        await shop.restart("catalog_svc")


async def test_gateway_requests_and_the_limiter_fail_open_counter_move(shop: Shop) -> None:
    product = await shop.new_product()
    before = await scrape(gateway_metrics(shop))
    assert (await shop.client.get(f"/v1/products/{product}")).status_code == 200
    after = await scrape(gateway_metrics(shop))
    ok = {"method": "GET", "status": "200"}
    assert after.value("http_requests_total", **ok) - before.value("http_requests_total", **ok) >= 1
    route = {"route": "/v1/products/{product_id}", "method": "GET"}
    assert (
        after.value("http_request_duration_seconds_count", **route)
        - before.value("http_request_duration_seconds_count", **route)
        == 1
    )
    routes = {labels.get("route", "") for name, labels, _ in after.samples if name == "http_requests_total"}
    assert not any(product in r for r in routes), f"raw paths used as route labels: {routes}"

    await shop.restart("gateway", SHOPMESH_VALKEY_URL=f"valkey://127.0.0.1:{closed_port()}/0")
    try:
        assert (await shop.client.get(f"/v1/products/{product}")).status_code == 200
        failed_open = await scrape(gateway_metrics(shop))
        assert failed_open.value("gateway_rate_limit_fail_open_total", rate_limit_class="browse") >= 1
    finally:
        await shop.restart("gateway")


async def test_an_event_the_consumer_cannot_apply_is_parked_and_counted_and_the_rest_flow(shop: Shop) -> None:
    """order_svc reads a topic of its own here whose first event cannot be parsed. The consumer failed
    on it forever, the events behind it piling up as lag; it parks it in dead_letters now (counted as
    outcome "dead_lettered", what KafkaEventsDeadLettered watches), and the lag behind it drains."""
    topic = f"obs-poison-{shop.mesh.suffix}-{uuid.uuid4().hex[:10]}"  # the suffix: deleted with the session
    bootstrap = shop.mesh.env["SHOPMESH_KAFKA_BOOTSTRAP"]
    await asyncio.to_thread(ensure_topics, bootstrap, [topic], partitions=1)
    await asyncio.to_thread(produce_behind_a_poison_event, bootstrap, topic, behind=30)
    await shop.restart("order_svc", SHOPMESH_TOPIC_INVENTORY_EVENTS=topic)
    try:
        group = f"order_svc.{topic}"

        def drained(s) -> bool:
            return (
                s.get("kafka_events_consumed_total", group=group, outcome="dead_lettered") == 1
                and s.get("kafka_events_consumed_total", group=group, outcome="ignored") == 30
                and s.get("kafka_consumer_lag", group=group, topic=topic) == 0
            )

        done = await wait_for(shop.mesh.metrics_url("order_svc"), drained, timeout=30)
        assert drained(done), (
            done.get("kafka_events_consumed_total", group=group, outcome="dead_lettered"),
            done.get("kafka_consumer_lag", group=group, topic=topic),
        )
        assert done.get("kafka_events_consumed_total", group=group, outcome="applied") in (None, 0)
        parked = sql(
            shop.mesh.database_url,
            "SELECT topic, kafka_offset, attempts FROM orders.dead_letters WHERE topic = %s",
            topic,
        )
        assert parked == [(topic, 0, 1)]  # the selector cannot read it: parked at once
    finally:
        await shop.restart("order_svc")


def produce_behind_a_poison_event(bootstrap: str, topic: str, *, behind: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap.split(","))
    try:
        for i in range(behind + 1):
            value = b"\xff not a protobuf" if i == 0 else events_pb2.InventoryEvent().SerializeToString()
            headers = [("event-id", str(uuid.uuid4()).encode()), ("event-type", b"test")]
            producer.send(topic, key=b"same-partition", value=value, headers=headers)
        producer.flush(timeout=10)
    finally:
        producer.close()
