"""What order_svc writes to the audit trail (meshkit.audit), always in the transaction of the change.

Status changes are recorded where every one of them is written (events.status_changed), so no path
(checkout, lifecycle, recovery) can change an order without its record. A move to PAID also records
the payment capture; a move that refunds records the payment refund. Checkout replays are audited
with the key's hash, never the key itself.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from psycopg import AsyncConnection

from meshkit.audit import GENESIS, audit, build_record
from order_svc.model import Order, OrderStatus, PaymentStatus

SERVICE = "order_svc"


def _status_change_entries(order: Order, from_status: OrderStatus) -> list[tuple[str, dict]]:
    """(action, changes) of each record a status change writes, in order."""
    entries: list[tuple[str, dict]] = [
        (
            f"order.{order.status.value.lower()}",
            {
                "status": {"before": from_status.value, "after": order.status.value},
                "total": str(order.total),
                "tracking_number": order.tracking_number or None,
            },
        )
    ]
    payment = {"amount": str(order.total), "payment_reference": order.payment_reference or None}
    if order.status == OrderStatus.PAID and from_status == OrderStatus.PENDING:
        entries.append(("payment.capture", payment))
    elif order.payment_status == PaymentStatus.REFUNDED and order.status in (
        OrderStatus.CANCELLED,
        OrderStatus.REFUNDED,
    ):
        entries.append(("payment.refund", payment))
    return entries


async def record_status_change(
    conn: AsyncConnection, order: Order, from_status: OrderStatus, *, reason: str = ""
) -> None:
    """`reason`: what the cancel or refund was given (validated, up to MAX_REASON_LENGTH)."""
    for n, (action, changes) in enumerate(_status_change_entries(order, from_status)):
        if reason and n == 0:
            changes["reason"] = reason
        await audit(conn, service=SERVICE, action=action, resource=f"order/{order.id}", changes=changes)


def first_status_change_records(
    order: Order, from_status: OrderStatus, occurred_at: dt.datetime
) -> tuple[str, list[dict]]:
    """(resource, records) of the order's first status change, chained from an empty chain: for the
    checkout's stored function, which writes them only if the order's chain has no head yet."""
    resource = f"order/{order.id}"
    records, prev_hash = [], GENESIS
    for seq, (action, changes) in enumerate(_status_change_entries(order, from_status), start=1):
        record = build_record(
            service=SERVICE,
            action=action,
            resource=resource,
            changes=changes,
            chain_seq=seq,
            prev_hash=prev_hash,
            occurred_at=occurred_at,
        )
        records.append(record)
        prev_hash = record["hash"]
    return resource, records


async def record_checkout_replay(
    conn: AsyncConnection, *, user_id: str, idempotency_key: str, layer: str
) -> None:
    key_hash = hashlib.sha256(f"{user_id}\n{idempotency_key}".encode()).hexdigest()[:24]
    await audit(
        conn,
        service=SERVICE,
        action="checkout.replay",
        resource=f"checkout-key/{key_hash}",
        changes={"layer": layer},
    )
