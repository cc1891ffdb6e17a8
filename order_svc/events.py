"""order-events written through meshkit's outbox, in the transaction of the change they describe.

Keyed by order id (per-order order on one partition); `version` is the order row's version after
the change (order_created is 1), so consumers can drop stale or repeated events. The `*_event`
builders return the row unwritten, for the checkout's stored functions that insert it in the same
round trip as the change.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from decimal import Decimal

from psycopg import AsyncConnection
from shop.events.v1 import events_pb2

from meshkit.outbox import OutboxEvent, proto_event, write_event
from order_svc.audit import record_status_change
from order_svc.convert import money, order_line_out, order_status, timestamp
from order_svc.model import Order, OrderLine, OrderStatus

ORDER_CREATED = "order.created"
ORDER_STATUS_CHANGED = "order.status_changed"


def order_created_event(
    *, topic: str, order_id: uuid.UUID, user_id: str, lines: Sequence[OrderLine], total: Decimal
) -> OutboxEvent:
    return proto_event(
        events_pb2.OrderEvent,
        topic=topic,
        key=str(order_id),
        event_type=ORDER_CREATED,
        order_id=str(order_id),
        version=1,
        occurred_at=timestamp(dt.datetime.now(dt.UTC)),
        order_created=events_pb2.OrderCreated(
            user_id=user_id, lines=[order_line_out(line) for line in lines], total=money(total)
        ),
    )


def status_changed_event(*, topic: str, order: Order, from_status: OrderStatus) -> OutboxEvent:
    return proto_event(
        events_pb2.OrderEvent,
        topic=topic,
        key=str(order.id),
        event_type=ORDER_STATUS_CHANGED,
        order_id=str(order.id),
        version=order.version,
        occurred_at=timestamp(dt.datetime.now(dt.UTC)),
        order_status_changed=events_pb2.OrderStatusChanged(
            from_status=order_status(from_status), to_status=order_status(order.status), user_id=order.user_id
        ),
    )


async def order_created(
    conn: AsyncConnection,
    *,
    topic: str,
    order_id: uuid.UUID,
    user_id: str,
    lines: Sequence[OrderLine],
    total: Decimal,
) -> uuid.UUID:
    return await write_event(
        conn, order_created_event(topic=topic, order_id=order_id, user_id=user_id, lines=lines, total=total)
    )


async def status_changed(
    conn: AsyncConnection, *, topic: str, order: Order, from_status: OrderStatus, reason: str = ""
) -> uuid.UUID:
    """The event of a status change, and its audit record: every status change passes here (or, for
    a checkout's PENDING -> PAID, through the stored function fed by `status_changed_event` and
    `audit.status_change_records`)."""
    await record_status_change(conn, order, from_status, reason=reason)
    return await write_event(conn, status_changed_event(topic=topic, order=order, from_status=from_status))
