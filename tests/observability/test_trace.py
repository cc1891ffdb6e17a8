"""One checkout through the gateway is one connected trace: gateway -> order_svc -> inventory_svc, and
on through the outbox and Kafka to the consumers (W3C traceparent in gRPC metadata and record headers).

Every process exports over OTLP/gRPC to a receiver in this test (tests/observability/otlp.py); an
in-memory exporter could not see the other processes.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator

import pytest_asyncio
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.observability.otlp import ReceivedSpan, TraceReceiver
from tests.observability.shop import SHIPPING, Shop


@pytest_asyncio.fixture(scope="module")
async def traced_shop(shop: Shop) -> AsyncIterator[tuple[Shop, TraceReceiver]]:
    receiver = TraceReceiver()
    await receiver.start()
    await shop.start(extra_env={"SHOPMESH_OTLP_ENDPOINT": receiver.endpoint})
    try:
        yield shop, receiver
    finally:
        for name in ("gateway", "order_svc", "catalog_svc", "inventory_svc"):
            await shop.mesh.stop(name)  # their exporters point at a receiver about to go away
        await receiver.stop()


SPAN_KIND_PRODUCER = trace_pb2.Span.SPAN_KIND_PRODUCER


def describe(spans: list[ReceivedSpan]) -> str:
    return "\n".join(f"  {s.service:14} {s.name:60} {s.span_id} <- {s.parent_span_id or '-'}" for s in spans)


async def test_a_checkout_is_one_connected_trace_across_processes_and_kafka(
    traced_shop: tuple[Shop, TraceReceiver],
) -> None:
    shop, receiver = traced_shop
    product = await shop.new_product()
    buyer = await shop.shopper_with_cart(product)
    # the caller's own trace context: the gateway must continue it, not start a new trace
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    idempotency_key = str(uuid.uuid4())
    reply = await shop.client.post(
        "/v1/orders",
        json={"shippingAddress": SHIPPING, "paymentToken": "tok_approve"},
        headers={
            **buyer,
            "Idempotency-Key": idempotency_key,
            "traceparent": f"00-{trace_id}-{caller_span}-01",
        },
    )
    assert reply.status_code == 201, reply.text
    order_id = reply.json()["order"]["id"]

    topics = {
        shop.mesh.topics["SHOPMESH_TOPIC_ORDER_EVENTS"],
        shop.mesh.topics["SHOPMESH_TOPIC_INVENTORY_EVENTS"],
    }

    def consumed_topics(spans: list[ReceivedSpan]) -> set[str]:
        return {str(s.attributes.get("messaging.destination.name")) for s in spans if s.is_consumer}

    def complete(spans: list[ReceivedSpan]) -> bool:
        mine = [s for s in spans if s.trace_id == trace_id]
        # every consumer's parent too: each process exports on its own schedule, and a consumer's
        # span could arrive before the relay's PRODUCER span it hangs from (seen once in CI)
        ids = {s.span_id for s in mine}
        return (
            {"gateway", "order_svc", "inventory_svc"} <= {s.service for s in mine}
            and topics <= consumed_topics(mine)
            and all(s.parent_span_id in ids for s in mine if s.is_consumer)
        )

    await receiver.wait_for(complete, timeout=30)
    spans = receiver.trace(trace_id)
    services = {s.service for s in spans}
    assert {"gateway", "order_svc", "inventory_svc"} <= services, describe(spans)
    consumers = [s for s in spans if s.is_consumer]
    # order_svc's order events (catalog's co-purchase consumer) and inventory_svc's stock events
    # (catalog's indexer, order_svc's reservation consumer) both carry the checkout's context
    assert topics <= consumed_topics(spans), f"consumer spans missing from the trace:\n{describe(spans)}"

    # connected: one entry point (the gateway's server span, child of the caller's span) and every
    # other span's parent is a span of this same trace
    ids = {s.span_id for s in spans}
    entry = [s for s in spans if s.parent_span_id == caller_span]
    assert [s.service for s in entry] == ["gateway"], describe(spans)
    orphans = [s for s in spans if s.parent_span_id not in ids and s.parent_span_id != caller_span]
    assert orphans == [], (
        f"spans whose parent is not in the trace:\n{describe(orphans)}\ntrace:\n{describe(spans)}"
    )

    # the path: gateway -> order_svc Checkout -> inventory_svc server span -> ... -> consumer
    by_id = {s.span_id: s for s in spans}

    def ancestors(span: ReceivedSpan) -> list[ReceivedSpan]:
        chain = []
        while span.parent_span_id in by_id:
            span = by_id[span.parent_span_id]
            chain.append(span)
        return chain

    checkout = [s for s in spans if s.service == "order_svc" and s.name.endswith("OrderService/Checkout")]
    assert len(checkout) == 1, describe(spans)
    assert any(a.service == "gateway" for a in ancestors(checkout[0]))
    inventory_calls = [s for s in spans if s.service == "inventory_svc" and checkout[0] in ancestors(s)]
    assert inventory_calls, f"no inventory_svc span under Checkout:\n{describe(spans)}"
    assert all(checkout[0] in ancestors(c) for c in consumers), describe(spans)
    # the longest path: an event written by inventory_svc while serving the checkout, relayed to Kafka
    # after commit and consumed in another process, still hangs under inventory_svc's span
    assert any(any(a.service == "inventory_svc" for a in ancestors(c)) for c in consumers), describe(spans)
    # between the writer and each consumer: the relay's PRODUCER span for that event, in the writer's
    # process, carrying the event id and how long the event waited in the outbox
    for consumer in consumers:
        producer = by_id[consumer.parent_span_id]
        assert producer.kind == SPAN_KIND_PRODUCER, describe(spans)
        assert producer.name == f"publish {consumer.attributes['messaging.destination.name']}"
        assert (
            producer.service in ("order_svc", "inventory_svc") and producer.attributes["messaging.message.id"]
        )
        assert float(producer.attributes["shop.outbox.wait_ms"]) >= 0

    # the ids a reader searches by: the order on Checkout and on inventory's commit for it, the
    # idempotency key only as a hash
    key_hash = hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]
    assert checkout[0].attributes.get("shop.order_id") == order_id, checkout[0].attributes
    assert checkout[0].attributes.get("shop.idempotency_key_hash") == key_hash, checkout[0].attributes
    commits = [s for s in spans if s.service == "inventory_svc" and s.name.endswith("/CommitReservations")]
    assert [c.attributes.get("shop.order_id") for c in commits] == [order_id], describe(spans)

    # nothing personal or secret in any span of the trace
    secrets_sent = [
        buyer["Authorization"].split()[-1],
        "tok_approve",
        idempotency_key,
        SHIPPING["name"],
        SHIPPING["line1"],
    ]
    leaked = [
        (s.service, s.name, key)
        for s in spans
        for key, value in s.attributes.items()
        if any(secret in str(value) for secret in secrets_sent)
    ]
    assert leaked == []
