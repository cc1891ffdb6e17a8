"""After the flash sale: what the databases and Kafka must show, as goals marked `correctness`.

First the system is let settle (no order left PENDING, every order event published and consumed);
then, for the whole bench database:
- no oversell: per hot SKU, units in paid orders == units sold by inventory (received - on hand)
  <= units received, and the stock invariants hold;
- every acknowledged (201) order exists exactly once, under its user and Idempotency-Key, paid;
- every paid order has exactly one capture in the sandbox provider's ledger, for its total, and no
  order that is not paid has money captured;
- every order.created event was published to Kafka and recorded once by catalog's co-purchase
  consumer (processed_events), with its co_purchases rows;
- stock and ledger agree for every stock row (inventory's own invariant query).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from typing import Any

import psycopg
from google.protobuf.duration_pb2 import Duration
from kafka import KafkaConsumer, TopicPartition
from shop.order.v1 import order_pb2, order_pb2_grpc

from inventory_svc.store import INVARIANT_SQL
from tests.harness import Mesh

SETTLE_TIMEOUT_S = 90.0


@dataclasses.dataclass(frozen=True)
class Ack:
    """A checkout the gateway answered 201."""

    user: str
    key: str
    order_id: str


def _goal(goal: str, measured: str, met: bool) -> dict[str, Any]:
    return {"goal": goal, "measured": measured, "met": met, "correctness": True}


def _scalar(conn: psycopg.Connection, sql: str, *params: Any) -> Any:
    row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


async def _settle(mesh: Mesh, copurchase_consumer: str, timeout_s: float) -> dict[str, Any]:
    """Wait for unfinished orders, the order outbox and the co-purchase consumer; after half the time,
    ask order_svc to recover what is still PENDING (what its recovery job would do a little later)."""
    deadline = time.monotonic() + timeout_s
    recovered = None
    while True:
        with psycopg.connect(mesh.database_url, autocommit=True) as conn:
            pending = _scalar(
                conn,
                "SELECT count(*) FROM orders.orders WHERE status = 'pending' OR transition_to IS NOT NULL",
            )
            unsent = _scalar(conn, "SELECT count(*) FROM orders.outbox WHERE sent_at IS NULL")
            unconsumed = _scalar(
                conn,
                """
                SELECT count(*) FROM orders.outbox o WHERE o.event_type = 'order.created' AND NOT EXISTS (
                    SELECT 1 FROM catalog.processed_events p WHERE p.consumer = %s AND p.event_id = o.event_id)
            """,
                copurchase_consumer,
            )
        if not (pending or unsent or unconsumed) or time.monotonic() > deadline:
            return {
                "pending_orders": pending,
                "unsent_order_events": unsent,
                "unconsumed_order_created": unconsumed,
                "recovered_by_rpc": recovered,
            }
        if pending and recovered is None and time.monotonic() > deadline - timeout_s / 2:
            stub = order_pb2_grpc.OrderServiceStub(mesh.channel("order_svc", "flash-checker", ("service",)))
            reply = await stub.RecoverOrders(order_pb2.RecoverOrdersRequest(min_age=Duration(seconds=5)))
            recovered = len(reply.completed_order_ids) + len(reply.compensated_order_ids)
        await asyncio.sleep(1.0)


def _kafka_order_events(bootstrap: str, topic: str) -> collections.Counter[str]:
    """Every record of the order topic, read from the beginning: event id -> copies."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        seen: collections.Counter[str] = collections.Counter()
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in partitions) and time.monotonic() < deadline:
            for records in consumer.poll(1000).values():
                for record in records:
                    headers = dict(record.headers or [])
                    seen[headers.get("event-id", b"").decode()] += 1
        return seen
    finally:
        consumer.close()


def _check_stock(conn: psycopg.Connection, hot: dict[int, int]) -> tuple[list[dict], int]:
    rows = []
    for product_id, initial in sorted(hot.items()):
        received = _scalar(
            conn,
            "SELECT coalesce(sum(quantity_delta), 0) FROM inventory.stock_ledger"
            " WHERE product_id = %s AND movement = 'receive'",
            product_id,
        )
        on_hand, reserved = conn.execute(
            "SELECT coalesce(sum(quantity), 0), coalesce(sum(reserved), 0) FROM inventory.stock WHERE product_id = %s",
            (product_id,),
        ).fetchone()
        paid_units = _scalar(
            conn,
            """
            SELECT coalesce(sum(l.quantity), 0) FROM orders.order_lines l JOIN orders.orders o ON o.id = l.order_id
             WHERE l.product_id = %s AND o.status IN ('paid', 'shipped', 'delivered')""",
            product_id,
        )
        sold = received - on_hand
        rows.append(
            {
                "product_id": product_id,
                "received": received,
                "sold": sold,
                "paid_units": paid_units,
                "reserved": reserved,
                "on_hand": on_hand,
                "ok": received == initial
                and 0 <= sold <= received
                and paid_units == sold
                and 0 <= reserved <= on_hand,
            }
        )
    with conn.transaction():
        conn.execute("SET LOCAL search_path = inventory")  # the invariant query is inventory's own
        violations = conn.execute(INVARIANT_SQL).fetchall()
    return rows, len(violations)


def _check_acks(conn: psycopg.Connection, acks: list[Ack]) -> list[str]:
    problems = []
    for ack in acks:
        found = conn.execute(
            "SELECT id, status FROM orders.orders WHERE user_id = %s AND idempotency_key = %s",
            (ack.user, ack.key),
        ).fetchall()
        if len(found) != 1 or str(found[0][0]) != ack.order_id or found[0][1] != "paid":
            problems.append(f"{ack.user}/{ack.key}: acknowledged {ack.order_id}, database has {found}")
    if len({a.order_id for a in acks}) != len(acks):
        problems.append("two acknowledged checkouts share an order id")
    return problems


def _check_captures(conn: psycopg.Connection) -> tuple[int, list[str]]:
    paid = conn.execute("""
        SELECT o.id, o.total, o.payment_reference, count(c.idempotency_key) AS charges,
               count(*) FILTER (WHERE c.status = 'captured' AND c.amount = o.total
                                AND c.reference = o.payment_reference) AS good
          FROM orders.orders o LEFT JOIN orders.sandbox_charges c ON c.idempotency_key = 'order:' || o.id
         WHERE o.status = 'paid' GROUP BY o.id""").fetchall()
    problems = [
        f"paid order {r[0]}: {r[3]} charges, {r[4]} matching captures" for r in paid if r[3] != 1 or r[4] != 1
    ]
    stray = conn.execute("""
        SELECT c.idempotency_key, o.status FROM orders.sandbox_charges c
          LEFT JOIN orders.orders o ON 'order:' || o.id = c.idempotency_key
         WHERE c.status = 'captured' AND o.status IS DISTINCT FROM 'paid'""").fetchall()
    problems += [f"captured charge {key} for an order that is {status}" for key, status in stray]
    return len(paid), problems


def _check_events(
    conn: psycopg.Connection, consumer: str, in_kafka: collections.Counter[str]
) -> tuple[dict, list[str]]:
    created = conn.execute(
        """
        SELECT o.event_id, o.key, o.sent_at IS NOT NULL AS sent,
               (SELECT count(*) FROM catalog.processed_events p WHERE p.consumer = %s AND p.event_id = o.event_id) AS processed,
               (SELECT count(*) FROM catalog.co_purchases c WHERE c.order_id::text = o.key) AS co_purchase_rows
          FROM orders.outbox o WHERE o.event_type = 'order.created'""",
        (consumer,),
    ).fetchall()
    orders = _scalar(conn, "SELECT count(*) FROM orders.orders")
    per_order = collections.Counter(row[1] for row in created)
    problems = [
        f"order.created {r[0]}: sent={r[2]} in_kafka={in_kafka.get(str(r[0]), 0)} processed={r[3]} "
        f"co_purchase_rows={r[4]}"
        for r in created
        if not r[2] or in_kafka.get(str(r[0]), 0) < 1 or r[3] != 1 or r[4] < 1
    ]
    if len(per_order) != orders or any(n != 1 for n in per_order.values()):
        problems.append(
            f"{orders} orders but order.created for {len(per_order)} (max {max(per_order.values(), default=0)} per order)"
        )
    stats = {
        "order_created_events": len(created),
        "kafka_records": sum(in_kafka.values()),
        "kafka_redelivered_copies": sum(n - 1 for n in in_kafka.values() if n > 1),
    }
    return stats, problems


async def verify(
    mesh: Mesh, *, hot: dict[int, int], acks: list[Ack], outcomes: collections.Counter[str]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    consumer = "catalog-copurchases"  # catalog's dedup identity for the co-purchase consumer
    settled = await _settle(mesh, consumer, SETTLE_TIMEOUT_S)
    in_kafka = await asyncio.to_thread(
        _kafka_order_events, mesh.env["SHOPMESH_KAFKA_BOOTSTRAP"], mesh.env["SHOPMESH_TOPIC_ORDER_EVENTS"]
    )
    with psycopg.connect(mesh.database_url, autocommit=True) as conn:
        stock_rows, invariant_violations = _check_stock(conn, hot)
        ack_problems = _check_acks(conn, acks)
        paid, capture_problems = _check_captures(conn)
        event_stats, event_problems = _check_events(conn, consumer, in_kafka)
        statuses = dict(conn.execute("SELECT status, count(*) FROM orders.orders GROUP BY status").fetchall())
    insufficient = sum(n for k, n in outcomes.items() if "INSUFFICIENT_STOCK" in k)
    oversold = [r for r in stock_rows if not r["ok"]]
    sold = sum(r["sold"] for r in stock_rows)
    goals = [
        _goal(
            "INSUFFICIENT_STOCK occurred (demand above stock)", f"{insufficient} answers", insufficient > 0
        ),
        _goal(
            "no oversell: per hot SKU, paid units == sold <= received",
            f"{sold}/{sum(hot.values())} units sold; {len(oversold)} SKUs off",
            not oversold,
        ),
        _goal(
            "every acknowledged order exists exactly once (paid)",
            f"{len(acks)} acknowledged, {len(ack_problems)} problems",
            not ack_problems,
        ),
        _goal(
            "every paid order has exactly one capture",
            f"{paid} paid, {len(capture_problems)} problems",
            not capture_problems,
        ),
        _goal(
            "every order event consumed once (catalog co-purchases)",
            f"{event_stats['order_created_events']} order.created, {len(event_problems)} problems",
            not event_problems and not settled["unconsumed_order_created"],
        ),
        _goal(
            "stock and ledger agree (inventory invariants)",
            f"{invariant_violations} violations",
            invariant_violations == 0,
        ),
        _goal(
            "no order left unfinished", f"{settled['pending_orders']} pending", settled["pending_orders"] == 0
        ),
    ]
    details = {
        "settle": settled,
        "orders_by_status": statuses,
        "hot_skus": stock_rows,
        "events": event_stats,
        "problems": (ack_problems + capture_problems + event_problems)[:20],
    }
    return goals, details
