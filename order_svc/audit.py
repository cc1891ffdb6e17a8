"""What order_svc writes to the audit trail (meshkit.audit), always in the transaction of the change.

Status changes are recorded where every one of them is written (events.status_changed), so no path
(checkout, lifecycle, recovery) can change an order without its record. A move to PAID also records
the payment capture; a move that refunds records the payment refund. Checkout replays are audited
with the key's hash, never the key itself.
"""

from __future__ import annotations

import hashlib

from psycopg import AsyncConnection

from meshkit.audit import audit
from order_svc.model import Order, OrderStatus, PaymentStatus

SERVICE = "order_svc"


async def record_status_change(conn: AsyncConnection, order: Order, from_status: OrderStatus) -> None:
    resource = f"order/{order.id}"
    await audit(
        conn,
        service=SERVICE,
        action=f"order.{order.status.value.lower()}",
        resource=resource,
        changes={
            "status": {"before": from_status.value, "after": order.status.value},
            "total": str(order.total),
            "tracking_number": order.tracking_number or None,
        },
    )
    if order.status == OrderStatus.PAID and from_status == OrderStatus.PENDING:
        await audit(
            conn,
            service=SERVICE,
            action="payment.capture",
            resource=resource,
            changes={"amount": str(order.total), "payment_reference": order.payment_reference or None},
        )
    elif order.payment_status == PaymentStatus.REFUNDED and order.status in (
        OrderStatus.CANCELLED,
        OrderStatus.REFUNDED,
    ):
        await audit(
            conn,
            service=SERVICE,
            action="payment.refund",
            resource=resource,
            changes={"amount": str(order.total), "payment_reference": order.payment_reference or None},
        )


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
