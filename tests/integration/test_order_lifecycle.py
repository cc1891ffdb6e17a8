"""Order lifecycle over gRPC: reads scoped to the owner, pagination, cancel/refund restocking exactly
once, admin ship/deliver, invalid transitions."""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
import pytest
from shop.order.v1 import cart_pb2, order_pb2

from meshkit.context import Principal
from meshkit.errors import Aborted
from meshkit.settings import load_settings
from order_svc import convert, store
from order_svc.config import OrderSettings
from order_svc.model import OrderStatus, PaymentStatus, validate_checkout
from order_svc.payments import SandboxProvider
from order_svc.peers import InventoryClient
from shopctl.orders import order_app
from tests.integration.order_helpers import (
    ADDRESS,
    ORDER_ENV,
    add,
    admin_orders,
    captures,
    carts,
    checkout,
    checkout_request,
    metadata_of,
    new_key,
    new_product,
    order_events,
    orders,
    reason_of,
    sql,
    start_order_mesh,
    stock_of,
    user_id,
)
from tests.observability.scrape import scrape

S = order_pb2


async def _paid_order(mesh, user: str, product: int, quantity: int = 1) -> order_pb2.Order:
    await add(mesh, user, product, quantity)
    order = await checkout(mesh, user, new_key())
    assert order.status == S.ORDER_STATUS_PAID
    return order


def _in_process(mesh, **env: str) -> OrderSettings:
    """order_svc's settings for use cases run in this process (order_app), as the mesh's has them."""
    return load_settings(OrderSettings, environ={**mesh.env_for("order_svc", ORDER_ENV), **env})


def _checkout_input(user: str, token: str = ""):
    return validate_checkout(
        user_id=user,
        idempotency_key=new_key(),
        shipping=convert.address_in(ADDRESS),
        billing=None,
        payment_token=token,
        notes="",
    )


def _take_the_lease_over(mesh, user: str) -> None:
    """Another driver takes the lease of the user's open order (as after a stall past it)."""
    sql(
        mesh.database_url, "UPDATE orders.orders SET lease_owner = gen_random_uuid() WHERE user_id = %s", user
    )


async def _fails(call, code: grpc.StatusCode, reason: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert (caught.value.code(), reason_of(caught.value)) == (code, reason), caught.value.details()
    return caught.value


def _restocks(mesh, order_id: str) -> list[tuple]:
    return sql(
        mesh.database_url,
        "SELECT product_id, quantity_delta FROM inventory.stock_ledger WHERE order_id = %s AND movement = 'restock'",
        order_id,
    )


async def test_users_read_and_page_through_only_their_own_orders(mesh):
    await start_order_mesh(mesh)
    user, other = user_id(), user_id()
    product = await new_product(mesh, stock=10)
    placed = [await _paid_order(mesh, user, product) for _ in range(3)]
    stub = orders(mesh, user)

    first = await stub.ListOrders(S.ListOrdersRequest(page_size=2))
    second = await stub.ListOrders(S.ListOrdersRequest(page_size=2, page_token=first.next_page_token))
    assert [o.id for o in first.orders] == [placed[2].id, placed[1].id]
    assert [o.id for o in second.orders] == [placed[0].id] and second.next_page_token == ""
    assert (await stub.GetOrder(S.GetOrderRequest(order_id=placed[0].id))).order == second.orders[0]

    await _fails(
        orders(mesh, other).GetOrder(S.GetOrderRequest(order_id=placed[0].id)),
        grpc.StatusCode.NOT_FOUND,
        "ORDER_NOT_FOUND",
    )
    await _fails(
        orders(mesh, other).CancelOrder(S.CancelOrderRequest(order_id=placed[0].id)),
        grpc.StatusCode.NOT_FOUND,
        "ORDER_NOT_FOUND",
    )
    assert list((await orders(mesh, other).ListOrders(S.ListOrdersRequest())).orders) == []
    admin_view = await admin_orders(mesh).GetOrder(S.GetOrderRequest(order_id=placed[0].id))
    assert admin_view.order.user_id == user
    await _fails(
        stub.ListOrders(S.ListOrdersRequest(page_token="not-a-token")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    await _fails(
        stub.GetOrder(S.GetOrderRequest(order_id="nope")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )


async def test_cancel_restocks_and_refunds_exactly_once_even_when_repeated_concurrently(mesh):
    await start_order_mesh(mesh)
    user = user_id()
    product = await new_product(mesh, stock=5)
    order = await _paid_order(mesh, user, product, 2)
    assert (await stock_of(mesh, product)).quantity == 3

    stub = orders(mesh, user)
    results = await asyncio.gather(
        *(
            stub.CancelOrder(S.CancelOrderRequest(order_id=order.id, reason="changed my mind"))
            for _ in range(5)
        )
    )

    assert {r.order.status for r in results} == {S.ORDER_STATUS_CANCELLED}
    assert {r.order.payment.status for r in results} == {S.PAYMENT_STATUS_REFUNDED}
    stock = await stock_of(mesh, product)
    assert (stock.quantity, stock.reserved, stock.available) == (5, 0, 5)
    assert _restocks(mesh, order.id) == [(product, 2)]
    assert [status for status, _, _ in captures(mesh.database_url, order.id)] == ["refunded"]
    again = await stub.CancelOrder(S.CancelOrderRequest(order_id=order.id))
    assert again.order.status == S.ORDER_STATUS_CANCELLED
    assert (await stock_of(mesh, product)).quantity == 5
    changes = [
        (e.version, e.order_status_changed.to_status)
        for e in order_events(mesh, order.id, want=3)
        if e.WhichOneof("payload") == "order_status_changed"
    ]
    assert sorted(set(changes)) == [(2, S.ORDER_STATUS_PAID), (3, S.ORDER_STATUS_CANCELLED)]


async def test_admin_ships_delivers_and_refunds_and_invalid_moves_are_refused(mesh):
    await start_order_mesh(mesh)
    user = user_id()
    product = await new_product(mesh, stock=5)
    order = await _paid_order(mesh, user, product, 2)
    admin = admin_orders(mesh)

    await _fails(
        orders(mesh, user).ShipOrder(S.ShipOrderRequest(order_id=order.id, tracking_number="T1")),
        grpc.StatusCode.PERMISSION_DENIED,
        "ADMIN_REQUIRED",
    )
    await _fails(
        admin.ShipOrder(S.ShipOrderRequest(order_id=order.id, tracking_number=" ")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    error = await _fails(
        admin.DeliverOrder(S.DeliverOrderRequest(order_id=order.id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_ORDER_TRANSITION",
    )
    assert metadata_of(error)["from_status"] == "ORDER_STATUS_PAID"
    assert metadata_of(error)["to_status"] == "ORDER_STATUS_DELIVERED"

    shipped = (await admin.ShipOrder(S.ShipOrderRequest(order_id=order.id, tracking_number="1Z999"))).order
    assert (shipped.status, shipped.tracking_number) == (S.ORDER_STATUS_SHIPPED, "1Z999")
    await _fails(
        orders(mesh, user).CancelOrder(S.CancelOrderRequest(order_id=order.id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_ORDER_TRANSITION",
    )
    delivered = (await admin.DeliverOrder(S.DeliverOrderRequest(order_id=order.id))).order
    assert delivered.status == S.ORDER_STATUS_DELIVERED
    assert (await stock_of(mesh, product)).quantity == 3

    returned = S.RefundOrderRequest(order_id=order.id, reason="returned", restock=True)
    refunded = (await admin.RefundOrder(returned)).order
    assert (refunded.status, refunded.payment.status) == (S.ORDER_STATUS_REFUNDED, S.PAYMENT_STATUS_REFUNDED)
    assert (await stock_of(mesh, product)).quantity == 5  # the goods came back
    await _fails(
        admin.RefundOrder(S.RefundOrderRequest(order_id=order.id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_ORDER_TRANSITION",
    )
    assert _restocks(mesh, order.id) == [(product, 2)]
    await _fails(
        admin.ShipOrder(
            S.ShipOrderRequest(order_id="00000000-0000-0000-0000-000000000000", tracking_number="X")
        ),
        grpc.StatusCode.NOT_FOUND,
        "ORDER_NOT_FOUND",
    )


async def test_moves_refused_because_a_cancel_is_half_done_are_aborted_not_forbidden(mesh):
    """A cancel or refund in flight blocks every other move until it ends: the retryable ABORTED
    naming it, where ship and refund of a PAID order answered "cannot go from paid to ..."."""
    await start_order_mesh(mesh)
    user = user_id()
    product = await new_product(mesh, stock=5)
    order = await _paid_order(mesh, user, product)
    admin = admin_orders(mesh)
    # as between a cancel's recorded intent and its final move (updated_at fresh: recovery waits)
    sql(
        mesh.database_url,
        "UPDATE orders.orders SET transition_to = 'cancelled', transition_restock = true, updated_at = now()"
        " WHERE id = %s",
        order.id,
    )
    try:
        for call in (
            admin.ShipOrder(S.ShipOrderRequest(order_id=order.id, tracking_number="1Z1")),
            admin.RefundOrder(S.RefundOrderRequest(order_id=order.id)),
        ):
            error = await _fails(call, grpc.StatusCode.ABORTED, "ORDER_TRANSITION_IN_PROGRESS")
            assert metadata_of(error)["to_status"] == "ORDER_STATUS_CANCELLED"
        # a move the state machine forbids is still permanent, in flight or not
        await _fails(
            admin.DeliverOrder(S.DeliverOrderRequest(order_id=order.id)),
            grpc.StatusCode.FAILED_PRECONDITION,
            "INVALID_ORDER_TRANSITION",
        )
    finally:
        sql(mesh.database_url, "UPDATE orders.orders SET transition_to = NULL WHERE id = %s", order.id)
    shipped = (await admin.ShipOrder(S.ShipOrderRequest(order_id=order.id, tracking_number="1Z1"))).order
    assert shipped.status == S.ORDER_STATUS_SHIPPED


async def test_a_refund_that_read_shipped_while_a_delivery_landed_is_aborted_for_a_retry(mesh, monkeypatch):
    """The refund read SHIPPED, a DeliverOrder committed, and the refund's conditional write found
    DELIVERED: it answered "cannot go from delivered to refunded", a move the state machine allows."""
    await start_order_mesh(mesh)
    user = user_id()
    product = await new_product(mesh, stock=5)
    order = await _paid_order(mesh, user, product)
    admin = admin_orders(mesh)
    await admin.ShipOrder(S.ShipOrderRequest(order_id=order.id, tracking_number="1Z2"))
    begin = store.begin_transition

    async def delivered_just_before(conn, order_id, **kwargs):
        sql(mesh.database_url, "UPDATE orders.orders SET status = 'delivered' WHERE id = %s", str(order_id))
        return await begin(conn, order_id, **kwargs)

    monkeypatch.setattr(store, "begin_transition", delivered_just_before)
    async with order_app(_in_process(mesh)) as app:
        with pytest.raises(Aborted) as caught:
            await app.lifecycle.refund(order.id, "returned")
    assert caught.value.message.endswith("changed from shipped to delivered meanwhile; retry")
    monkeypatch.undo()
    refunded = (await admin.RefundOrder(S.RefundOrderRequest(order_id=order.id))).order  # the retry
    assert refunded.status == S.ORDER_STATUS_REFUNDED


async def test_a_refund_after_shipping_restocks_only_goods_that_came_back(mesh):
    """A refund of a SHIPPED or DELIVERED order put its units back into stock as if the goods had been
    returned: stock then sold units that were with the customer. They go back only with `restock`;
    a PAID order's units (never shipped) always do."""
    await start_order_mesh(mesh)
    user = user_id()
    product = await new_product(mesh, stock=10)
    admin = admin_orders(mesh)
    kept, paid = await _paid_order(mesh, user, product, 2), await _paid_order(mesh, user, product, 3)
    await admin.ShipOrder(S.ShipOrderRequest(order_id=kept.id, tracking_number="1Z1"))
    await admin.DeliverOrder(S.DeliverOrderRequest(order_id=kept.id))

    refunded = (await admin.RefundOrder(S.RefundOrderRequest(order_id=kept.id, reason="lost"))).order
    assert (refunded.status, refunded.payment.status) == (S.ORDER_STATUS_REFUNDED, S.PAYMENT_STATUS_REFUNDED)
    assert [status for status, _, _ in captures(mesh.database_url, kept.id)] == ["refunded"]
    assert _restocks(mesh, kept.id) == []
    assert (await stock_of(mesh, product)).quantity == 5  # the 2 delivered units stay sold

    await admin.RefundOrder(S.RefundOrderRequest(order_id=paid.id))  # `restock` unset: still restocked
    assert _restocks(mesh, paid.id) == [(product, 3)]
    stock = await stock_of(mesh, product)
    assert (stock.quantity, stock.reserved) == (8, 0)


async def test_a_driver_that_lost_its_lease_does_not_restock_what_the_new_driver_sells(mesh, monkeypatch):
    """A driver stalled past its lease meets a decline (or a shortage) after another driver took the
    order over: its compensation restocked the order's committed units, which the new driver then
    sold anyway. It now checks it still holds the lease before giving anything back."""
    await start_order_mesh(mesh)
    user = user_id()
    product = await new_product(mesh, stock=5)
    await add(mesh, user, product, 2)
    charge = SandboxProvider.charge

    async def charge_then_lose_the_lease(provider, **call):
        done = await charge(provider, **call)
        _take_the_lease_over(mesh, user)
        return done

    monkeypatch.setattr(SandboxProvider, "charge", charge_then_lose_the_lease)
    settings = _in_process(mesh)
    async with order_app(settings) as app:
        request = _checkout_input(user, "tok_decline")
        with pytest.raises(Aborted):  # superseded: the new driver's outcome is not there yet
            await app.checkout.checkout(request)

    [(order_id, status)] = sql(
        mesh.database_url, "SELECT id, status FROM orders.orders WHERE user_id = %s", user
    )
    assert status == "pending"
    assert _restocks(mesh, str(order_id)) == []
    stock = await stock_of(mesh, product)
    assert (stock.quantity, stock.reserved) == (3, 0)  # still committed to the order


def _lose_the_lease_right_after_the_void(mesh, user: str, monkeypatch) -> None:
    """A cancel's void of the payment key returns, and another driver has taken its lease over."""
    void = SandboxProvider.void

    async def void_then_lose_the_lease(provider, key):
        charge = await void(provider, key)
        _take_the_lease_over(mesh, user)
        return charge

    monkeypatch.setattr(SandboxProvider, "void", void_then_lose_the_lease)


async def _pending_order(mesh, user: str, product: int) -> str:
    await add(mesh, user, product, 2)
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # the provider never answers: left PENDING
        await orders(mesh, user).Checkout(checkout_request(new_key(), "tok_timeout"))
    return metadata_of(caught.value)["order_id"]


async def test_a_cancel_slower_than_one_lease_keeps_its_lease(mesh, monkeypatch):
    """Cancelling a PENDING order took its lease and never renewed it: a cancel slowed past one lease
    (provider, inventory) could lose the order to a retry of the checkout key, and its own final
    move, fenced by the lease, would then change nothing."""
    await start_order_mesh(mesh)
    user = user_id()
    order_id = await _pending_order(mesh, user, await new_product(mesh, stock=5))
    void, leases = SandboxProvider.void, []

    async def slow_void(provider, key):
        await asyncio.sleep(2.5)  # two and a half leases
        leases.extend(
            sql(
                mesh.database_url,
                "SELECT lease_owner IS NOT NULL, lease_until > now() FROM orders.orders WHERE id = %s",
                order_id,
            )
        )
        return await void(provider, key)

    monkeypatch.setattr(SandboxProvider, "void", slow_void)
    async with order_app(_in_process(mesh, SHOPMESH_IDEMPOTENCY_LEASE_SECONDS="1")) as app:
        cancelled = await app.lifecycle.cancel(Principal(user, ()), order_id, "")

    assert leases == [(True, True)]  # still held, renewed
    assert cancelled.status == OrderStatus.CANCELLED


async def test_a_pending_cancel_is_recorded_before_its_first_remote_step(mesh, monkeypatch):
    """The cancel of a PENDING order is written down (cancel_requested_at) with its lease, before the
    payment key is voided: a cancel dying after the void left nothing saying so, and the next driver
    met the closed key and ended the order FAILED / PAYMENT_DECLINED "voided". The reason given ends
    in the audit record."""
    await start_order_mesh(mesh)
    user = user_id()
    order_id = await _pending_order(mesh, user, await new_product(mesh, stock=5))
    void, seen = SandboxProvider.void, []

    async def recording_void(provider, key):
        seen.extend(
            sql(
                mesh.database_url,
                "SELECT cancel_requested_at IS NOT NULL, cancel_reason, transition_to FROM orders.orders"
                " WHERE id = %s",
                order_id,
            )
        )
        return await void(provider, key)

    monkeypatch.setattr(SandboxProvider, "void", recording_void)
    async with order_app(_in_process(mesh)) as app:
        cancelled = await app.lifecycle.cancel(Principal(user, ()), order_id, "found it cheaper")

    # transition_to stays NULL: pods of the previous version read it on a PENDING order as a PAID
    # order's cancel, one they could never end (their recovery restocked and reported it each pass)
    assert seen == [(True, "found it cheaper", None)]
    assert (cancelled.status, cancelled.transition_to) == (OrderStatus.CANCELLED, None)
    assert sql(
        mesh.database_url,
        "SELECT changes->>'reason' FROM orders.audit_log WHERE resource = %s AND action = 'order.cancelled'",
        f"order/{order_id}",
    ) == [("found it cheaper",)]


async def test_a_cancel_whose_lease_was_taken_over_is_not_reported_as_done(mesh, monkeypatch):
    """When another driver takes the lease over mid-cancel, the cancel's fenced final move changes
    nothing; it answered the still PENDING order as its result. Now it says to retry (ABORTED)."""
    await start_order_mesh(mesh)
    user = user_id()
    order_id = await _pending_order(mesh, user, await new_product(mesh, stock=5))
    _lose_the_lease_right_after_the_void(mesh, user, monkeypatch)
    settings = _in_process(mesh)
    async with order_app(settings) as app:
        with pytest.raises(Aborted):
            await app.lifecycle.cancel(Principal(user, ()), order_id, "")

    [(status,)] = sql(mesh.database_url, "SELECT status FROM orders.orders WHERE id = %s", order_id)
    assert status == "pending"


async def test_a_cancel_that_lost_its_lease_refunds_nothing_the_new_driver_may_complete(mesh, monkeypatch):
    """The cancel voided the key and found a capture; if another driver took the lease over
    meanwhile, that driver may be completing the order with that capture: refunding it would leave
    a PAID order with its money gone. The cancel checks its lease first, and answers ABORTED."""
    await start_order_mesh(mesh)
    user = user_id()
    order_id = await _pending_order(mesh, user, await new_product(mesh, stock=5))
    sql(  # captured under the order's key meanwhile (a retry of the checkout, say)
        mesh.database_url,
        "INSERT INTO orders.sandbox_charges (idempotency_key, reference, status, amount, currency)"
        " SELECT 'order:' || id, 'ch_retry', 'captured', total, 'USD' FROM orders.orders WHERE id = %s",
        order_id,
    )
    _lose_the_lease_right_after_the_void(mesh, user, monkeypatch)
    async with order_app(_in_process(mesh)) as app:
        with pytest.raises(Aborted):
            await app.lifecycle.cancel(Principal(user, ()), order_id, "")

    assert [status for status, _, _ in captures(mesh.database_url, order_id)] == ["captured"]


async def test_cancelling_a_checkout_left_pending_gives_the_stock_back(mesh):
    await start_order_mesh(mesh)
    user = user_id()
    product = await new_product(mesh, stock=5)
    await add(mesh, user, product, 2)
    key = new_key()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orders(mesh, user).Checkout(checkout_request(key, "tok_timeout"))
    order_id = metadata_of(caught.value)["order_id"]
    failed_before = (await scrape(mesh.metrics_url("order_svc"))).get("orders_total", status="failed")

    cancelled = (await orders(mesh, user).CancelOrder(S.CancelOrderRequest(order_id=order_id))).order

    assert cancelled.status == S.ORDER_STATUS_CANCELLED
    # the user's cancel is no checkout failure (it raised HighCheckoutFailureRate); 0 from the start
    assert (await scrape(mesh.metrics_url("order_svc"))).get("orders_total", status="failed") == failed_before
    assert failed_before is not None
    stock = await stock_of(mesh, product)
    assert (stock.quantity, stock.reserved, stock.available) == (5, 0, 5)
    await _fails(
        orders(mesh, user).Checkout(checkout_request(key, "tok_timeout")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "CHECKOUT_ABANDONED",
    )


async def test_a_cancel_that_read_pending_while_checkout_completed_cancels_the_paid_order_properly(mesh):
    """The cancel reads the order as PENDING; before it takes the lease the checkout completes (PAID).
    It must not void-then-refund it as a pending checkout (which left it PAID with its money refunded):
    it cancels the paid order through the refund saga, refunding and restocking once."""
    await start_order_mesh(mesh)
    user = user_id()
    product = await new_product(mesh, stock=5)
    order = await _paid_order(mesh, user, product, 2)
    settings = _in_process(mesh)
    async with order_app(settings) as app:
        lifecycle = app.lifecycle
        read = lifecycle.get
        reads = []

        async def read_pending_first(principal, raw_id):
            found = await read(principal, raw_id)
            reads.append(found.status)
            # the first read happened before checkout_complete committed
            return dataclasses.replace(found, status=OrderStatus.PENDING) if len(reads) == 1 else found

        lifecycle.get = read_pending_first
        cancelled = await lifecycle.cancel(Principal(user, ()), order.id, "changed my mind")

    assert (cancelled.status, cancelled.payment_status) == (OrderStatus.CANCELLED, PaymentStatus.REFUNDED)
    stored = (await orders(mesh, user).GetOrder(S.GetOrderRequest(order_id=order.id))).order
    assert (stored.status, stored.payment.status) == (S.ORDER_STATUS_CANCELLED, S.PAYMENT_STATUS_REFUNDED)
    assert [status for status, _, _ in captures(mesh.database_url, order.id)] == ["refunded"]
    assert _restocks(mesh, order.id) == [(product, 2)]
    stock = await stock_of(mesh, product)
    assert (stock.quantity, stock.reserved, stock.available) == (5, 0, 5)
    assert reads == [OrderStatus.PAID, OrderStatus.PAID]  # read again once the lease was refused


async def test_a_checkout_that_stalled_past_its_lease_cannot_complete_the_order_a_cancel_took_over(
    mesh, monkeypatch
):
    """The checkout's driver freezes right after the capture (a GC pause, a stopped VM) until its lease
    has run out; a cancel takes the lease over, finds the capture and refunds it. The driver waking
    between that refund and the cancel's final move must not complete the order: it did, and the
    cancel then found it PAID and gave up, leaving a paid order whose money was refunded."""
    await start_order_mesh(mesh)
    user = user_id()
    product = await new_product(mesh, stock=5)
    await add(mesh, user, product, 2)
    settings = _in_process(mesh)
    captured, woken = asyncio.Event(), asyncio.Event()
    charge, refund = SandboxProvider.charge, SandboxProvider.refund

    async def charge_then_freeze(provider, **call):
        done = await charge(provider, **call)
        captured.set()
        await woken.wait()
        return done

    async with order_app(settings) as app:
        request = _checkout_input(user)
        driver = asyncio.ensure_future(app.checkout.checkout(request))

        async def refund_then_wake_the_driver(provider, key):
            done = await refund(provider, key)
            woken.set()
            await asyncio.wait([driver], timeout=10)  # its step 4 runs before the cancel's final move
            return done

        monkeypatch.setattr(SandboxProvider, "charge", charge_then_freeze)
        monkeypatch.setattr(SandboxProvider, "refund", refund_then_wake_the_driver)
        await asyncio.wait_for(captured.wait(), 10)
        [(order_id,)] = sql(mesh.database_url, "SELECT id FROM orders.orders WHERE user_id = %s", user)
        sql(  # the frozen driver missed its renewals
            mesh.database_url,
            "UPDATE orders.orders SET lease_until = now() - interval '1 second' WHERE id = %s",
            order_id,
        )
        cancelled = await app.lifecycle.cancel(Principal(user, ()), str(order_id), "changed my mind")
        assert driver.done()
        with pytest.raises(Aborted):  # superseded: the cancel's outcome is not stored yet
            await driver
        replay, _ = await app.checkout.checkout(request)

    assert (cancelled.status, cancelled.payment_status) == (OrderStatus.CANCELLED, PaymentStatus.REFUNDED)
    with pytest.raises(convert.ReplayedError) as replayed:  # a retry of the key: the cancel's outcome
        convert.decode_outcome(replay)
    assert replayed.value.reason == "CHECKOUT_ABANDONED"
    stored = (await orders(mesh, user).GetOrder(S.GetOrderRequest(order_id=str(order_id)))).order
    assert (stored.status, stored.payment.status) == (S.ORDER_STATUS_CANCELLED, S.PAYMENT_STATUS_REFUNDED)
    assert [status for status, _, _ in captures(mesh.database_url, str(order_id))] == ["refunded"]
    assert _restocks(mesh, str(order_id)) == [(product, 2)]
    stock = await stock_of(mesh, product)
    assert (stock.quantity, stock.reserved, stock.available) == (5, 0, 5)


async def test_a_driver_that_stalled_while_re_reserving_attaches_nothing_to_the_order_a_cancel_ended(
    mesh, monkeypatch
):
    """A checkout meets lapsed reservations and re-reserves; its re-reserve stalls past the lease, a
    cancel takes the order over and ends it. The driver woke and tied the new reservations to the
    cancelled order and its cart line for good: that line then refused every change with
    CHECKOUT_IN_PROGRESS. It now records nothing, gives the new units back and stands down."""
    await start_order_mesh(mesh)
    user = user_id()
    product = await new_product(mesh, stock=5)
    await add(mesh, user, product, 2)
    sql(  # the cart's reservations lapse (as after 30 minutes), the sweeper not yet run
        mesh.database_url,
        "UPDATE inventory.reservations SET expires_at = now() - interval '1 second'"
        " WHERE owner = %s AND status = 'active'",
        user,
    )
    reserve, cancelled = InventoryClient.reserve, []
    settings = _in_process(mesh)
    async with order_app(settings) as app:

        async def reserve_then_stall_while_a_cancel_ends_the_order(client, **call):
            held = await reserve(client, **call)
            [(order_id,)] = sql(mesh.database_url, "SELECT id FROM orders.orders WHERE user_id = %s", user)
            sql(  # the stalled driver missed its renewals
                mesh.database_url,
                "UPDATE orders.orders SET lease_until = now() - interval '1 second' WHERE id = %s",
                order_id,
            )
            cancelled.append(await app.lifecycle.cancel(Principal(user, ()), str(order_id), "too slow"))
            return held

        monkeypatch.setattr(InventoryClient, "reserve", reserve_then_stall_while_a_cancel_ends_the_order)
        outcome, _ = await app.checkout.checkout(_checkout_input(user))

    with pytest.raises(convert.ReplayedError) as ended:  # superseded: it answers the cancel's outcome
        convert.decode_outcome(outcome)
    assert ended.value.reason == "CHECKOUT_ABANDONED"
    [order] = cancelled
    assert order.status == OrderStatus.CANCELLED
    assert sql(
        mesh.database_url, "SELECT count(*) FROM orders.order_reservations WHERE order_id = %s", order.id
    ) == [(0,)]
    stock = await stock_of(mesh, product)
    assert (stock.quantity, stock.reserved) == (5, 0)  # the re-reserved units went back
    await carts(mesh, user).ClearCart(cart_pb2.ClearCartRequest())  # no line held by an ended order
