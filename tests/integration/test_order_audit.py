"""order_svc's audit trail: one record per status change, payment capture and refund, checkout
replay, with the acting principal; a refused transition leaves none."""

from __future__ import annotations

import grpc
import pytest
from shop.audit.v1 import audit_pb2, audit_pb2_grpc
from shop.order.v1 import order_pb2

from tests.integration.order_helpers import (
    add,
    admin_orders,
    checkout,
    new_key,
    new_product,
    orders,
    start_order_mesh,
    user_id,
)


async def _records(mesh, resource: str) -> list[audit_pb2.AuditRecord]:
    stub = audit_pb2_grpc.AuditServiceStub(mesh.channel("order_svc", "auditor", ("admin",)))
    reply = await stub.ListAuditRecords(audit_pb2.ListAuditRecordsRequest(resource=resource, page_size=50))
    return list(reversed(reply.records))  # oldest first


async def test_order_actions_are_audited_once_each_with_their_actor(mesh):
    await start_order_mesh(mesh)
    user = user_id()
    product = await new_product(mesh, stock=5)
    await add(mesh, user, product, 1)
    key = new_key()
    order = await checkout(mesh, user, key)
    replay = await checkout(mesh, user, key)
    assert replay.id == order.id
    await admin_orders(mesh).ShipOrder(order_pb2.ShipOrderRequest(order_id=order.id, tracking_number="TRK-1"))
    with pytest.raises(grpc.aio.AioRpcError):  # a refused move leaves no record
        await orders(mesh, user).CancelOrder(order_pb2.CancelOrderRequest(order_id=order.id))
    await admin_orders(mesh).RefundOrder(order_pb2.RefundOrderRequest(order_id=order.id, reason="damaged"))

    records = await _records(mesh, f"order/{order.id}")
    actions = [(r.action, r.actor) for r in records]
    assert actions == [
        ("order.paid", user),
        ("payment.capture", user),
        ("order.shipped", "ops-admin"),
        ("order.refunded", "ops-admin"),
        ("payment.refund", "ops-admin"),
    ]
    assert "admin" in records[2].actor_roles
    assert records[0].changes["status"]["before"] == "pending"
    assert records[2].changes["tracking_number"] == "TRK-1"
    assert records[3].changes["reason"] == "damaged"  # was validated, stored, then dropped
    assert "reason" not in records[0].changes
    for record in records:  # no addresses or payment tokens in the trail
        text = str(record.changes)
        assert "line1" not in text and "tok_" not in text
    replays = [r for r in (await _records(mesh, "")) if r.action == "checkout.replay" and r.actor == user]
    assert len(replays) == 1
