"""Inventory events: every committed change reaches Kafka through the outbox, none that was rejected,
and with the broker unreachable the changes queue and then drain."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import psycopg
import pytest
from kafka import KafkaConsumer
from shop.events.v1 import events_pb2
from shop.inventory.v1 import inventory_pb2 as pb

from tests.harness import free_port
from tests.integration.inventory_helpers import admin_stub, new_product_id, service_stub, stock_product


def outbox_event_ids(database_url: str, product_id: int) -> tuple[set[str], int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT event_id, sent_at FROM inventory.outbox WHERE key = %s", (str(product_id),)
        ).fetchall()
    return {str(r[0]) for r in rows}, sum(1 for r in rows if r[1] is None)


def consume_product_events(
    bootstrap: str, topic: str, product_id: int, expected: set[str], timeout: float
) -> list:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=[bootstrap],
        group_id=f"test-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    seen: list[tuple[str, events_pb2.InventoryEvent]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    if record.key != str(product_id).encode():
                        continue
                    headers = dict(record.headers)
                    event = events_pb2.InventoryEvent.FromString(record.value)
                    seen.append((headers["event-id"].decode(), event))
            if expected <= {event_id for event_id, _ in seen}:
                break
    finally:
        consumer.close()
    return seen


async def test_committed_changes_reach_kafka_and_rejected_ones_do_not(mesh):
    await mesh.start("inventory_svc")
    admin, svc = admin_stub(mesh), service_stub(mesh)
    product = new_product_id()
    await stock_product(admin, product, {1: 2})  # change 1
    await svc.ReserveStock(pb.ReserveStockRequest(owner="a", product_id=product, quantity=2))  # change 2
    for attempt in range(3):  # rejected: nothing to publish
        with pytest.raises(grpc.aio.AioRpcError):
            await svc.ReserveStock(
                pb.ReserveStockRequest(owner=f"b{attempt}", product_id=product, quantity=1)
            )
    with pytest.raises(grpc.aio.AioRpcError):
        await admin.AdjustStock(pb.AdjustStockRequest(product_id=product, warehouse_id=1, delta=-1))
    await admin.AdjustStock(pb.AdjustStockRequest(product_id=product, warehouse_id=1, delta=5))  # change 3

    event_ids, _ = outbox_event_ids(mesh.database_url, product)
    assert len(event_ids) == 3
    bootstrap = mesh.env["SHOPMESH_KAFKA_BOOTSTRAP"]
    topic = mesh.topics["SHOPMESH_TOPIC_INVENTORY_EVENTS"]
    seen = await asyncio.to_thread(consume_product_events, bootstrap, topic, product, event_ids, 30)
    assert {event_id for event_id, _ in seen} == event_ids  # duplicates allowed, none missing, no extras
    versions = sorted({event.version for _, event in seen})
    assert versions == [1, 2, 3]
    last = max(seen, key=lambda item: item[1].version)[1]
    assert last.stock_level_changed.available == 5 and last.stock_level_changed.in_stock


async def test_changes_queue_while_kafka_is_unreachable_then_drain(mesh):
    dead_kafka = f"127.0.0.1:{free_port()}"
    await mesh.restart("inventory_svc", extra_env={"SHOPMESH_KAFKA_BOOTSTRAP": dead_kafka})
    try:
        admin, svc = admin_stub(mesh), service_stub(mesh)
        product = new_product_id()
        await stock_product(admin, product, {1: 10, 2: 10})
        for i in range(5):
            await svc.ReserveStock(pb.ReserveStockRequest(owner=f"u{i}", product_id=product, quantity=1))
        await asyncio.sleep(1.0)
        event_ids, unsent = outbox_event_ids(mesh.database_url, product)
        assert len(event_ids) == 7 and unsent == 7  # the service kept working; nothing was lost
    finally:
        await mesh.restart("inventory_svc")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _, unsent = outbox_event_ids(mesh.database_url, product)
        if unsent == 0:
            break
        await asyncio.sleep(0.3)
    assert unsent == 0
    bootstrap = mesh.env["SHOPMESH_KAFKA_BOOTSTRAP"]
    topic = mesh.topics["SHOPMESH_TOPIC_INVENTORY_EVENTS"]
    seen = await asyncio.to_thread(consume_product_events, bootstrap, topic, product, event_ids, 30)
    assert {event_id for event_id, _ in seen} == event_ids
