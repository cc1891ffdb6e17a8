"""Crashes at each checkout step boundary: order_svc SIGKILLs itself at a failpoint
(SHOPMESH_FAILPOINTS), is restarted, and a retry with the same key (or the recovery job) finishes
the order exactly once: one order, at most one capture, stock moved once, one order.created."""

from __future__ import annotations

import asyncio
import signal
import time

import grpc
import pytest
from google.protobuf import duration_pb2
from shop.order.v1 import cart_pb2, order_pb2, order_pb2_grpc

from meshkit.auth import INTERNAL_TOKEN_HEADER, TokenMinter
from meshkit.context import Principal
from tests.integration.order_helpers import (
    add,
    admin_orders,
    captures,
    carts,
    checkout_request,
    new_key,
    new_product,
    order_events,
    orders,
    orders_for_key,
    reason_of,
    sql,
    start_order_mesh,
    stock_of,
    user_id,
)

pytestmark = pytest.mark.fault

PAID = order_pb2.ORDER_STATUS_PAID


def _dying_at(failpoint: str) -> dict[str, str]:
    """order_svc's env to die at `failpoint` in this test's own request only: its recovery job would
    meet orders earlier tests left PENDING, and compensating one reached the failpoint at start-up
    (its first pass runs at once)."""
    return {"SHOPMESH_FAILPOINTS": failpoint, "SHOPMESH_RECOVERY_ENABLED": "false"}


async def _crash_during_checkout(mesh, failpoint: str, user: str, key: str, token: str = "") -> None:
    await start_order_mesh(mesh, _dying_at(failpoint))
    proc = mesh.procs["order_svc"]
    # a channel of its own (not sharing the mesh channels' subchannel, which may still be backing
    # off from the restart) that fails fast instead of waiting for the dead server to come back
    internal = TokenMinter(mesh.internal_secret, Principal(user, ())).token()
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(mesh.addr("order_svc"), options=options) as channel:
        stub = order_pb2_grpc.OrderServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Checkout(
                checkout_request(key, token),
                metadata=[(INTERNAL_TOKEN_HEADER, internal)],
                timeout=10,
                wait_for_ready=True,
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
    assert await proc.wait_exit(10) == -signal.SIGKILL, "order_svc did not die at the failpoint"
    await start_order_mesh(mesh)  # restarted without failpoints


async def _retry(mesh, user: str, key: str, token: str = "", timeout: float = 20.0):
    """Retry with the same key while the crashed attempt's ~3 s lease keeps it IN_PROGRESS."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return (await orders(mesh, user).Checkout(checkout_request(key, token))).order
        except grpc.aio.AioRpcError as error:
            in_progress = reason_of(error) == "IDEMPOTENCY_KEY_IN_PROGRESS"
            if not in_progress or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.5)


async def _single_order_id(mesh, user: str, key: str) -> str:
    rows = orders_for_key(mesh.database_url, user, key)
    assert len(rows) == 1, rows
    return str(rows[0][0])


@pytest.mark.parametrize("failpoint", ["after_order_created", "after_commit", "after_payment"])
async def test_crash_at_a_step_boundary_then_retry_completes_exactly_once(mesh, failpoint):
    user, key = user_id(), new_key()
    await start_order_mesh(mesh)
    product = await new_product(mesh, stock=5)
    await add(mesh, user, product, 2)

    await _crash_during_checkout(mesh, failpoint, user, key)
    order = await _retry(mesh, user, key)

    assert order.status == PAID
    assert await _single_order_id(mesh, user, key) == order.id
    assert [status for status, _, _ in captures(mesh.database_url, order.id)] == ["captured"]
    stock = await stock_of(mesh, product)
    assert (stock.quantity, stock.reserved) == (3, 0)
    assert list((await carts(mesh, user).GetCart(cart_pb2.GetCartRequest())).cart.items) == []
    events = order_events(mesh, order.id, want=2)
    assert len({e.event_id for e in events if e.WhichOneof("payload") == "order_created"}) == 1
    assert [e.version for e in events if e.WhichOneof("payload") == "order_status_changed"] == [2]
    again = (await orders(mesh, user).Checkout(checkout_request(key))).order
    assert again.SerializeToString(deterministic=True) == order.SerializeToString(deterministic=True)


async def test_cart_units_taken_by_an_unfinished_checkout_stay_until_it_ends(mesh):
    """The order was created for 3 units (step 1) and its driver died before committing them (step 2).
    Lowering, removing or clearing the line now would release units the order is charged for while
    step 2 commits its reservations by id: the order would sell 3 and move 1. Raising it would
    reserve units the line stops counting when the order takes its 3 off. The cart refuses."""
    user, key = user_id(), new_key()
    await start_order_mesh(mesh)
    product = await new_product(mesh, stock=5)
    await add(mesh, user, product, 3)

    await _crash_during_checkout(mesh, "after_order_created", user, key)
    cart = carts(mesh, user)
    for change in (  # one after the other (a grpc.aio call starts when it is made)
        lambda: cart.UpdateCartItem(cart_pb2.UpdateCartItemRequest(product_id=product, quantity=1)),
        lambda: cart.RemoveCartItem(cart_pb2.RemoveCartItemRequest(product_id=product)),
        lambda: cart.ClearCart(cart_pb2.ClearCartRequest()),
        # more of a product it sells: units the line would no longer count once the checkout ends
        lambda: cart.UpdateCartItem(cart_pb2.UpdateCartItemRequest(product_id=product, quantity=4)),
        lambda: cart.AddCartItem(cart_pb2.AddCartItemRequest(product_id=product, quantity=1)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await change()
        assert (caught.value.code(), reason_of(caught.value)) == (
            grpc.StatusCode.ABORTED,
            "CHECKOUT_IN_PROGRESS",
        ), caught.value.details()
    assert (await stock_of(mesh, product)).reserved == 3
    # a product the checkout does not sell comes and goes as usual
    other = await new_product(mesh, stock=5)
    await add(mesh, user, other, 1)
    await cart.RemoveCartItem(cart_pb2.RemoveCartItemRequest(product_id=other))
    order = await _retry(mesh, user, key)

    assert order.status == PAID and [line.quantity for line in order.lines] == [3]
    stock = await stock_of(mesh, product)
    assert (stock.quantity, stock.reserved) == (2, 0)
    assert list((await carts(mesh, user).GetCart(cart_pb2.GetCartRequest())).cart.items) == []
    # once the checkout has ended the cart changes again
    await add(mesh, user, product, 2)
    updated = await cart.UpdateCartItem(cart_pb2.UpdateCartItemRequest(product_id=product, quantity=1))
    assert updated.item.quantity == 1 and (await stock_of(mesh, product)).reserved == 1


async def test_a_clear_refused_at_a_claimed_line_releases_nothing_before_it(mesh):
    """ClearCart released line by line in inventory and refused at the first line an unfinished
    checkout holds: the rollback kept the earlier lines' reservations in the cart, but inventory had
    freed them. Every line is checked first now."""
    user, key = user_id(), new_key()
    await start_order_mesh(mesh)
    sold, extra = await new_product(mesh, stock=5), await new_product(mesh, stock=5)
    await add(mesh, user, sold, 1)
    await _crash_during_checkout(mesh, "after_order_created", user, key)
    await add(mesh, user, extra, 2)  # a product the checkout does not sell: added as usual
    # ... and listed before the claimed line (a fresh position for that one), so a line-by-line
    # clear releases it first
    sql(
        mesh.database_url,
        "UPDATE orders.cart_items SET position = DEFAULT WHERE user_id = %s AND product_id = %s",
        user,
        sold,
    )

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await carts(mesh, user).ClearCart(cart_pb2.ClearCartRequest())

    assert reason_of(caught.value) == "CHECKOUT_IN_PROGRESS"
    assert (await stock_of(mesh, extra)).reserved == 2  # nothing of the other line was released


async def test_crash_after_restocking_a_declined_payment_restocks_once(mesh):
    user, key = user_id(), new_key()
    await start_order_mesh(mesh)
    product = await new_product(mesh, stock=5)
    await add(mesh, user, product, 2)

    await _crash_during_checkout(mesh, "after_restock", user, key, "tok_decline")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _retry(mesh, user, key, "tok_decline")

    assert reason_of(caught.value) == "PAYMENT_DECLINED"
    order_id = await _single_order_id(mesh, user, key)
    assert [status for status, _, _ in captures(mesh.database_url, order_id)] == ["declined"]
    stock = await stock_of(mesh, product)
    assert (stock.quantity, stock.reserved, stock.available) == (5, 0, 5)


async def _cancel_dies_after_restocking(mesh, user: str, order_id: str) -> None:
    """CancelOrder on an order_svc that SIGKILLs itself once the cancel has restocked (after_restock);
    then order_svc restarted without failpoints."""
    await start_order_mesh(mesh, _dying_at("after_restock"))
    proc = mesh.procs["order_svc"]
    internal = TokenMinter(mesh.internal_secret, Principal(user, ())).token()
    async with grpc.aio.insecure_channel(
        mesh.addr("order_svc"), options=[("grpc.use_local_subchannel_pool", 1)]
    ) as channel:
        stub = order_pb2_grpc.OrderServiceStub(channel)
        deadline = time.monotonic() + 20
        while True:  # ABORTED while the crashed checkout's ~3 s lease lasts
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.CancelOrder(
                    order_pb2.CancelOrderRequest(order_id=order_id),
                    metadata=[(INTERNAL_TOKEN_HEADER, internal)],
                    timeout=10,
                )
            if caught.value.code() != grpc.StatusCode.ABORTED or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
    assert await proc.wait_exit(10) == -signal.SIGKILL, "order_svc did not die at the failpoint"
    await start_order_mesh(mesh)


async def _cancel_dies_after_a_crash(mesh, failpoint: str) -> tuple[str, str, int, str]:
    """A checkout of 2 units killed at `failpoint`, then a cancel of its order killed after its
    restock: (user, key, product, order id)."""
    user, key = user_id(), new_key()
    await start_order_mesh(mesh)
    product = await new_product(mesh, stock=5)
    await add(mesh, user, product, 2)
    await _crash_during_checkout(mesh, failpoint, user, key)
    order_id = await _single_order_id(mesh, user, key)
    await _cancel_dies_after_restocking(mesh, user, order_id)
    return user, key, product, order_id


async def test_a_retry_ends_a_checkout_whose_cancel_died_after_restocking(mesh):
    """A cancel of a checkout left before step 2 restocks (fencing the order's commit), then dies
    before its final move. A retry of the key used to answer ABORTED, leaving the order PENDING and
    putting recovery off with every retry; it then ended the order FAILED, though the user had asked
    to cancel it. The cancel is recorded before its first remote step, so the retry ends it
    CANCELLED."""
    user, key, product, order_id = await _cancel_dies_after_a_crash(mesh, "after_order_created")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _retry(mesh, user, key)

    assert (caught.value.code(), reason_of(caught.value)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "CHECKOUT_ABANDONED",
    ), caught.value.details()
    order = (await admin_orders(mesh).GetOrder(order_pb2.GetOrderRequest(order_id=order_id))).order
    assert order.status == order_pb2.ORDER_STATUS_CANCELLED
    assert [status for status, _, _ in captures(mesh.database_url, order_id)] == ["voided"]
    # nothing was sold: the 2 units are the cart's reservations again, its line kept
    stock = await stock_of(mesh, product)
    assert (stock.quantity, stock.reserved) == (5, 2)
    items = (await carts(mesh, user).GetCart(cart_pb2.GetCartRequest())).cart.items
    assert [(i.product_id, i.quantity) for i in items] == [(product, 2)]


async def _recover_until(mesh, order_id: str, field: str, timeout: float = 20.0) -> None:
    """RecoverOrders skips orders whose crashed driver's lease has not expired yet: ask until done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = await admin_orders(mesh).RecoverOrders(
            order_pb2.RecoverOrdersRequest(min_age=duration_pb2.Duration(seconds=0))
        )
        if order_id in getattr(response, field):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"order {order_id} not in {field}")


async def test_recovery_compensates_a_checkout_that_crashed_before_payment(mesh):
    user, key = user_id(), new_key()
    await start_order_mesh(mesh)
    product = await new_product(mesh, stock=5)
    await add(mesh, user, product, 2)

    await _crash_during_checkout(mesh, "after_commit", user, key)
    order_id = await _single_order_id(mesh, user, key)
    assert (await stock_of(mesh, product)).quantity == 3  # committed to the order when it crashed
    await _recover_until(mesh, order_id, "compensated_order_ids")

    stock = await stock_of(mesh, product)
    assert (stock.quantity, stock.reserved, stock.available) == (5, 0, 5)
    assert [status for status, _, _ in captures(mesh.database_url, order_id)] == ["voided"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orders(mesh, user).Checkout(checkout_request(key))
    assert reason_of(caught.value) == "CHECKOUT_ABANDONED"


async def test_recovery_records_the_refund_of_a_cancel_that_died_after_refunding(mesh):
    """The cancel found the crashed checkout's capture, refunded it, restocked and died before its
    final move: recovery ends the order CANCELLED, as the user asked, with the payment REFUNDED (it
    wrote FAILED with no payment, then FAILED / REFUNDED)."""
    _, _, product, order_id = await _cancel_dies_after_a_crash(mesh, "after_payment")

    await _recover_until(mesh, order_id, "compensated_order_ids")

    order = (await admin_orders(mesh).GetOrder(order_pb2.GetOrderRequest(order_id=order_id))).order
    assert (order.status, order.payment.status) == (
        order_pb2.ORDER_STATUS_CANCELLED,
        order_pb2.PAYMENT_STATUS_REFUNDED,
    )
    assert [status for status, _, _ in captures(mesh.database_url, order_id)] == ["refunded"]
    stock = await stock_of(mesh, product)
    assert (stock.quantity, stock.reserved) == (5, 0)


async def test_recovery_completes_a_checkout_that_crashed_after_payment(mesh):
    user, key = user_id(), new_key()
    await start_order_mesh(mesh)
    product = await new_product(mesh, stock=5)
    await add(mesh, user, product, 2)

    await _crash_during_checkout(mesh, "after_payment", user, key)
    order_id = await _single_order_id(mesh, user, key)
    await _recover_until(mesh, order_id, "completed_order_ids")

    order = (await orders(mesh, user).Checkout(checkout_request(key))).order
    assert (order.id, order.status) == (order_id, PAID)
    assert [status for status, _, _ in captures(mesh.database_url, order_id)] == ["captured"]
    stock = await stock_of(mesh, product)
    assert (stock.quantity, stock.reserved) == (3, 0)
    assert list((await carts(mesh, user).GetCart(cart_pb2.GetCartRequest())).cart.items) == []


async def test_recovery_leaves_an_order_whose_lease_lapsed_only_moments_ago(mesh):
    # fault suite (PostgreSQL restarted under load): a checkout's lease renewal came late behind a busy
    # pool, so its 3 s lease had lapsed while the driver still ran; the order was 30 s old, and the
    # recovery job compensated it under the running checkout, whose retry then got CHECKOUT_ABANDONED.
    # Recovery must wait until the order has had no step and no lease for its min_age.
    user, key = user_id(), new_key()
    await start_order_mesh(mesh)
    product = await new_product(mesh, stock=5)
    await add(mesh, user, product, 2)
    await _crash_during_checkout(mesh, "after_order_created", user, key)
    order_id = await _single_order_id(mesh, user, key)
    # created an hour ago; its driver renewed the lease until a second ago and was late for the next
    sql(
        mesh.database_url,
        "UPDATE orders.orders SET updated_at = now() - interval '1 hour',"
        " lease_owner = gen_random_uuid(), lease_until = now() - interval '1 second' WHERE id = %s",
        order_id,
    )
    recover = order_pb2.RecoverOrdersRequest(min_age=duration_pb2.Duration(seconds=30))

    early = await admin_orders(mesh).RecoverOrders(recover)

    assert order_id not in early.compensated_order_ids and order_id not in early.completed_order_ids
    assert orders_for_key(mesh.database_url, user, key)[0][1] == "pending"
    # the same order once nothing has held its lease for min_age: recovery takes it
    sql(
        mesh.database_url,
        "UPDATE orders.orders SET lease_until = now() - interval '31 seconds' WHERE id = %s",
        order_id,
    )
    late = await admin_orders(mesh).RecoverOrders(recover)
    assert order_id in late.compensated_order_ids
    assert orders_for_key(mesh.database_url, user, key)[0][1] == "failed"
    assert (await stock_of(mesh, product)).quantity == 5  # nothing was sold
