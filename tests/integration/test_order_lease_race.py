"""Drivers racing for the same PENDING orders (their payment answer never came: for half of them
the provider charged nothing, for the other half it captured and the answer was lost): retries of the checkout key, cancels and recovery passes, all at once, with one-second
leases. Whoever wins each order's lease, money and stock must agree with the order's end state:
a PAID order holds exactly its capture, a CANCELLED or FAILED one holds no capture (voided, declined
or refunded), stock went out once per unit of a PAID order, and every answer a caller got matches."""

from __future__ import annotations

import asyncio
import random

import grpc
from google.protobuf import duration_pb2
from shop.order.v1 import order_pb2

from tests.integration.order_helpers import (
    add,
    admin_orders,
    captures,
    checkout_request,
    metadata_of,
    new_key,
    new_product,
    orders,
    reason_of,
    sql,
    start_order_mesh,
    stock_of,
    user_id,
)

ORDERS = 10
UNITS = 2
S = order_pb2
# what a racing caller may be told besides the order itself
RETRYABLE = {
    (grpc.StatusCode.ABORTED, "IDEMPOTENCY_KEY_IN_PROGRESS"),
    (grpc.StatusCode.ABORTED, "ABORTED"),
    (grpc.StatusCode.ABORTED, "ORDER_TRANSITION_IN_PROGRESS"),
    (grpc.StatusCode.UNAVAILABLE, "PAYMENT_UNAVAILABLE"),
}


async def _pending_order(mesh, product: int, *, captured: bool) -> tuple[str, str, str]:
    """(user, key, order id) of a checkout whose payment answer never came, left PENDING. `captured`:
    the provider took the money all the same (its answer was lost), as a charge under the order's key."""
    user, key = user_id(), new_key()
    await add(mesh, user, product, UNITS)
    try:
        await orders(mesh, user).Checkout(checkout_request(key, "tok_timeout"))
    except grpc.aio.AioRpcError as error:
        order_id = metadata_of(error)["order_id"]
    else:
        raise AssertionError("a tok_timeout checkout answered")
    if captured:
        sql(
            mesh.database_url,
            "INSERT INTO orders.sandbox_charges (idempotency_key, reference, status, amount, currency)"
            " SELECT 'order:' || id, 'ch_lost_' || id, 'captured', total, 'USD' FROM orders.orders WHERE id = %s",
            order_id,
        )
    return user, key, order_id


async def test_racing_retries_cancels_and_recovery_keep_money_and_stock_consistent(mesh):
    await start_order_mesh(mesh, {"SHOPMESH_IDEMPOTENCY_LEASE_SECONDS": "1"})
    product = await new_product(mesh, stock=ORDERS * UNITS)
    pending = [await _pending_order(mesh, product, captured=i % 2 == 1) for i in range(ORDERS)]
    rng = random.Random(5)
    answers: dict[str, list[tuple[str, object]]] = {order_id: [] for _, _, order_id in pending}
    unexpected: list[tuple[str, str, object]] = []

    async def attempt(order_id: str, what: str, call) -> None:
        try:
            reply = await call
        except grpc.aio.AioRpcError as error:
            outcome = (error.code(), reason_of(error))
            if outcome not in RETRYABLE and outcome != (
                grpc.StatusCode.FAILED_PRECONDITION,
                "CHECKOUT_ABANDONED",
            ):
                unexpected.append((order_id, what, outcome))
            answers[order_id].append((what, outcome))
            return
        answers[order_id].append((what, reply.order.status if hasattr(reply, "order") else "recovered"))

    async def race(user: str, key: str, order_id: str) -> None:
        calls = [
            (
                "retry",
                orders(mesh, user).Checkout(checkout_request(key, "tok_timeout")),
            )
            for _ in range(3)
        ]
        calls.append(("cancel", orders(mesh, user).CancelOrder(S.CancelOrderRequest(order_id=order_id))))
        calls += [
            (
                "recover",
                admin_orders(mesh).RecoverOrders(S.RecoverOrdersRequest(min_age=duration_pb2.Duration())),
            )
            for _ in range(2)
        ]
        rng.shuffle(calls)
        await asyncio.gather(*(attempt(order_id, what, call) for what, call in calls))

    await asyncio.gather(*(race(*p) for p in pending))
    assert unexpected == [], unexpected

    # let every lease lapse, then finish whatever the race left PENDING (recovery of a PENDING order
    # with a capture completes it, without one it ends FAILED)
    for _ in range(20):
        left = [
            o
            for _, _, order_id in pending
            if (o := (await admin_orders(mesh).GetOrder(S.GetOrderRequest(order_id=order_id))).order).status
            == S.ORDER_STATUS_PENDING
        ]
        if not left:
            break
        await asyncio.sleep(0.6)
        await admin_orders(mesh).RecoverOrders(S.RecoverOrdersRequest(min_age=duration_pb2.Duration()))
    sold = 0
    for user, key, order_id in pending:
        order = (await admin_orders(mesh).GetOrder(S.GetOrderRequest(order_id=order_id))).order
        charges = [status for status, _, _ in captures(mesh.database_url, order_id)]
        said = answers[order_id]
        assert order.status in (S.ORDER_STATUS_PAID, S.ORDER_STATUS_CANCELLED, S.ORDER_STATUS_FAILED), (
            order,
            said,
        )
        if order.status == S.ORDER_STATUS_PAID:
            assert (charges, order.payment.status) == (["captured"], S.PAYMENT_STATUS_CAPTURED), (
                charges,
                said,
            )
            sold += UNITS
        else:  # no money kept for an order that did not sell
            assert charges in ([], ["voided"], ["refunded"], ["declined"]), (order.status, charges, said)
            assert order.payment.status != S.PAYMENT_STATUS_CAPTURED, (order, said)
        if ("cancel", S.ORDER_STATUS_CANCELLED) in said:  # an acknowledged cancel stays done
            assert order.status == S.ORDER_STATUS_CANCELLED, (order.status, said)
        if ("retry", S.ORDER_STATUS_PAID) in said:  # a caller told PAID was charged once, kept or refunded
            assert charges in (["captured"], ["refunded"]), (order.status, charges, said)
        # a retry of the key now replays how the checkout ended, as stored: PAID means the order was
        # paid, and is still or was cancelled after it (a cancel of a PAID order refunds it)
        try:
            replay = (await orders(mesh, user).Checkout(checkout_request(key, "tok_timeout"))).order
            assert (replay.id, replay.status) == (order_id, S.ORDER_STATUS_PAID), (order.status, said)
            assert order.status == S.ORDER_STATUS_PAID or (order.status, charges) == (
                S.ORDER_STATUS_CANCELLED,
                ["refunded"],
            ), (order.status, charges, said)
        except grpc.aio.AioRpcError as error:
            assert reason_of(error) == "CHECKOUT_ABANDONED", (error.details(), said)
            assert order.status != S.ORDER_STATUS_PAID, (order.status, said)
    stock = await stock_of(mesh, product)
    assert stock.quantity == ORDERS * UNITS - sold, (stock, sold, answers)
